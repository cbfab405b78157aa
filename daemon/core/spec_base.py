"""The building blocks of the config format: strict models, validated names, addresses.

PURE: imports only the standard library and pydantic.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Patterns are matched with re.fullmatch (pydantic's own patterns with its Rust engine,
# where "$" is the end of the text): with re.match, "$" would also accept a final "\n".
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$"
TARGET_PATTERN = r"^(vd|sd|hd|xvd)[a-z]{1,2}$"
MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
BRIDGE_PATTERN = r"^[A-Za-z0-9_.:-]{1,15}$"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
NAMED_INTERVALS = {"hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}


def parse_duration(text: str) -> float | None:
    """"7d", "12h", "30m", "90" (seconds), "0"; "never": None."""
    text = text.strip()
    if text == "never":
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (like 7d, 12h, 30m, 0 or never)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def human_bytes(size: int) -> str:
    """1073741824 -> "1.0 GiB" (for messages; the exact bytes go in logs and status)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def check_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '.', '_' and '-', "
            "at most 63 characters, not starting with '.' or '-'"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]


def _check_abs_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    if "\x00" in value or "\n" in value:
        raise ValueError("path contains a NUL or newline character")
    return value


AbsPath = Annotated[str, AfterValidator(_check_abs_path)]


# A validator that checks one field from its model says so as "@field.path: reason";
# core.config moves that path into the error's location.


def _address_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"an address is written as a string, like \"10.0.0.1\", not {value!r}")
    return value


# Strict: a number is a JSON number, true is true. Only these two take text, as JSON
# must write them: a closed set's value, and an IP address (never an integer).
Lax = Field(strict=False)
IPv4 = Annotated[ipaddress.IPv4Address, BeforeValidator(_address_text), Lax]
IPv6 = Annotated[ipaddress.IPv6Address, BeforeValidator(_address_text), Lax]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True,
        use_enum_values=False, strict=True,
    )
