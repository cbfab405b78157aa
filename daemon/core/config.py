"""Parse config files and merge them into one desired state.

PURE: imports only the standard library and pydantic. Reading the directory
(permissions, which files count) is the shell's job, in daemon/configdir.py.

Rules from the product notes:
- every error names the file, the JSON path of the field and the reason;
- a file that fails keeps its last good content (its domains are neither changed
  nor removed) until it is fixed or deleted;
- a name declared in two files is a conflict naming both; it keeps its last good state.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from .spec import ConfigFile, Domain, Network


@dataclass(frozen=True, slots=True)
class ConfigError:
    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.reason}" if self.path else f"{self.file}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParsedFile:
    file: str
    config: ConfigFile | None
    errors: tuple[ConfigError, ...] = ()

    @property
    def ok(self) -> bool:
        return self.config is not None


@dataclass(frozen=True, slots=True)
class Declared:
    """A domain or network together with the file that declared it."""

    file: str
    spec: Domain | Network


@dataclass(frozen=True, slots=True)
class DesiredState:
    domains: Mapping[str, Declared]
    networks: Mapping[str, Declared]
    errors: tuple[ConfigError, ...] = ()
    # files whose current content is broken (last good content used, if any)
    broken_files: frozenset[str] = frozenset()
    # names in conflict (kind, name) -> files declaring it
    conflicts: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def held(self, kind: str, name: str, source_file: str | None) -> bool:
        """True when nvirtd must not change or remove this object now."""
        return (kind, name) in self.conflicts or (source_file is not None and source_file in self.broken_files)


def parse_text(file: str, text: str) -> ParsedFile:
    """Parse and validate one file's content."""
    if not text.strip():
        return _failed(file, "", 'the file is empty; write {} for a file that declares nothing')
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return _failed(file, "", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    if not isinstance(raw, dict):
        return _failed(file, "", f"the top level must be an object with 'domains' and/or 'networks', not {_json_type(raw)}")
    try:
        return ParsedFile(file=file, config=ConfigFile.model_validate(raw))
    except ValidationError as exc:
        errors = tuple(_translate(file, err) for err in exc.errors(include_url=False))
        return ParsedFile(file=file, config=None, errors=errors)


def _failed(file: str, path: str, reason: str) -> ParsedFile:
    return ParsedFile(file=file, config=None, errors=(ConfigError(file, path, reason),))


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _translate(file: str, err: dict[str, Any]) -> ConfigError:
    loc = [str(p) for p in err["loc"]]
    kind = err["type"]
    value = err.get("input")
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    path = ".".join(loc)
    if kind == "enum":
        allowed = err["ctx"]["expected"].replace("'", "")
        allowed = allowed.replace(" or ", ", ")
        reason = f"{value!r} is not one of {allowed}"
    elif kind == "extra_forbidden":
        reason = f"unknown option {loc[-1]!r}" + _closest(loc[-1])
    elif kind == "missing":
        reason = "required option is missing"
    elif kind in ("int_type", "int_parsing", "bool_type", "bool_parsing", "string_type",
                  "dict_type", "model_type", "model_attributes_type", "int_from_float"):
        expected = {"int": "an integer", "boo": "true or false", "str": "a string",
                    "dic": "an object", "mod": "an object"}[kind[:3]]
        reason = f"expected {expected}, got {_json_type(value)} {json.dumps(value)[:60]}"
    elif kind == "string_pattern_mismatch":
        reason = f"{value!r} does not match {err['ctx']['pattern']}"
    else:
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        reason = msg if kind == "value_error" else f"{msg} (got {json.dumps(value, default=str)[:60]})"
        if reason.startswith("@"):
            field_path, _, reason = reason[1:].partition(": ")
            path = f"{path}.{field_path}" if path else field_path
    return ConfigError(file, path, reason)


def _option_names(root: type[BaseModel]) -> set[str]:
    """Every option name of the format (as written in JSON), for "did you mean" hints."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    models = [root]
    while models:
        model = models.pop()
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
            stack = [info.annotation]
            while stack:  # look inside Optional[...], dict[..., Model], Annotated[...]
                item = stack.pop()
                stack.extend(getattr(item, "__args__", ()) or ())
                if isinstance(item, type) and issubclass(item, BaseModel) and item not in seen:
                    seen.add(item)
                    models.append(item)
    return names


_KNOWN_KEYS = _option_names(ConfigFile)


def _closest(key: str) -> str:
    match = difflib.get_close_matches(key, sorted(_KNOWN_KEYS), n=1, cutoff=0.6)
    if not match:
        lowered = {k.lower(): k for k in _KNOWN_KEYS}
        if key.lower() in lowered:
            match = [lowered[key.lower()]]
    return f" (did you mean {match[0]!r}?)" if match else ""


def merge(files: Mapping[str, ParsedFile], last_good: Mapping[str, ConfigFile]) -> DesiredState:
    """Merge parsed files into one desired state.

    `files` is every file present now; `last_good` the last content of each file
    that parsed. A broken file contributes its last good content (if it has one).
    """
    effective: dict[str, ConfigFile] = {}
    errors: list[ConfigError] = []
    broken: set[str] = set()
    for name in sorted(files):
        parsed = files[name]
        if parsed.ok:
            effective[name] = parsed.config  # type: ignore[assignment]
        else:
            errors.extend(parsed.errors)
            broken.add(name)
            if name in last_good:
                effective[name] = last_good[name]

    declared: dict[str, dict[str, list[Declared]]] = {"domain": {}, "network": {}}
    for file_name, cfg in effective.items():
        for dom_name, dom in cfg.domains.items():
            declared["domain"].setdefault(dom_name, []).append(Declared(file_name, dom))
        for net_name, net in cfg.networks.items():
            declared["network"].setdefault(net_name, []).append(Declared(file_name, net))

    conflicts: dict[tuple[str, str], tuple[str, ...]] = {}
    result: dict[str, dict[str, Declared]] = {"domain": {}, "network": {}}
    for kind, by_name in declared.items():
        for obj_name, decls in by_name.items():
            if len(decls) == 1:
                result[kind][obj_name] = decls[0]
                continue
            owners = tuple(sorted(d.file for d in decls))
            conflicts[(kind, obj_name)] = owners
            errors.append(ConfigError(
                owners[1], f"{kind}s.{obj_name}",
                f"{kind} {obj_name!r} is also declared in {', '.join(o for o in owners if o != owners[1])}; "
                "each name may be declared in one file only (keeping its last good state)",
            ))
    errors.extend(_cross_checks(result["domain"], result["network"]))
    return DesiredState(
        domains=result["domain"], networks=result["network"], errors=tuple(errors),
        broken_files=frozenset(broken), conflicts=conflicts,
    )


def _cross_checks(domains: Mapping[str, Declared], networks: Mapping[str, Declared]) -> list[ConfigError]:
    """Rules that span files: duplicate MACs and static leases naming unknown domains."""
    from .identity import interface_mac, domain_uuid  # local: identity imports spec only

    errors: list[ConfigError] = []
    macs: dict[str, str] = {}
    for dom_name, decl in sorted(domains.items()):
        dom: Domain = decl.spec  # type: ignore[assignment]
        uuid = domain_uuid(dom_name, dom.uuid)
        for nic_name, nic in dom.interfaces.items():
            mac = interface_mac(uuid, nic_name, nic.mac)
            where = f"{decl.file}: domains.{dom_name}.interfaces.{nic_name}"
            if mac in macs:
                errors.append(ConfigError(decl.file, f"domains.{dom_name}.interfaces.{nic_name}.mac",
                                          f"MAC {mac} is also used by {macs[mac]}"))
            else:
                macs[mac] = where
    return errors
