"""Strict JSON text -> Python values, with errors a person can act on.

PURE: standard library only.

json.loads alone is too lenient for a declarative config and can crash on hostile
input: a duplicate key silently keeps the last value (`{"domains": {...},
"domains": {}}` would declare nothing and remove that file's VMs), `NaN` and
`Infinity` are accepted, a 100,000-deep array raises RecursionError and a number of
4,301 digits raises ValueError. Here every one of these is a `JsonProblem` with a
line (and for a duplicate key, both lines), and nothing else can escape.

The fast path is the C parser; only a file that has a duplicate key is parsed a
second time by a position-tracking parser, to name the lines.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from typing import Any

MAX_DEPTH = 64  # the format nests 6 levels deep; anything near this is not a config


class JsonProblem(ValueError):
    """Why a text is not acceptable JSON, already phrased for the user."""


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise JsonProblem(f"{name} is not a JSON number")


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def loads(text: str) -> Any:
    """Parse `text`; raise JsonProblem (and nothing else) when it is not acceptable."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise JsonProblem(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except _Duplicate as dup:
        raise JsonProblem(_describe_duplicate(text, dup.key)) from None
    except RecursionError:
        raise JsonProblem(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except JsonProblem as exc:
        raise JsonProblem(f"invalid JSON: {exc}") from None
    except ValueError as exc:  # int() of a number with more digits than Python converts
        raise JsonProblem(f"invalid JSON: a number is too long ({str(exc).split(':')[0].lower()})") from None
    # nesting needs an opening bracket per level: a text with fewer cannot be too deep
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise JsonProblem(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a deep value must not recurse here either)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


# ---- the slow path: where is the duplicate? ------------------------------------------
class _Located(Exception):
    def __init__(self, key: str, first: int, second: int) -> None:
        self.key, self.first, self.second = key, first, second


def _describe_duplicate(text: str, key: str) -> str:
    try:
        _PositionDecoder().decode(text)
    except _Located as found:
        (l1, _), (l2, _) = _line_col(text, found.first), _line_col(text, found.second)
        return f"duplicate key {found.key!r} at lines {l1} and {l2} (JSON keeps only the last one)"
    except (ValueError, RecursionError):
        pass
    return f"duplicate key {key!r} (JSON keeps only the last one)"


_WS = json.decoder.WHITESPACE.match
_scanstring = json.decoder.py_scanstring


def _object_with_positions(s_and_end: tuple[str, int], strict: bool, scan_once: Any, *_: Any, **__: Any) -> tuple[dict, int]:
    """json.decoder.JSONObject, reduced to what a config needs, recording where each key starts."""
    s, end = s_and_end
    result: dict[str, Any] = {}
    where: dict[str, int] = {}
    end = _WS(s, end).end()
    if s[end:end + 1] == "}":
        return result, end + 1
    while True:
        if s[end:end + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, end)
        start = end
        key, end = _scanstring(s, end + 1, strict)
        if key in where:
            raise _Located(key, where[key], start)
        where[key] = start
        end = _WS(s, end).end()
        if s[end:end + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", s, end)
        end = _WS(s, end + 1).end()
        value, end = scan_once(s, end)
        result[key] = value
        end = _WS(s, end).end()
        char = s[end:end + 1]
        end += 1
        if char == "}":
            return result, end
        if char != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", s, end - 1)
        end = _WS(s, end).end()


class _PositionDecoder(json.JSONDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.parse_object = _object_with_positions
        self.scan_once = json.scanner.py_make_scanner(self)
