"""Parse config files and merge them into one desired state.

PURE: imports only the standard library and pydantic. Reading the directory
(permissions, which files count) is the shell's job, in daemon/configfiles.py.

Rules from the product notes:
- every error names the file, the JSON path of the field and the reason;
- a file that fails keeps its last good content (its domains are neither changed
  nor removed) until it is fixed or deleted;
- a name declared in two files is a conflict naming both; it keeps its last good state.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any, Mapping

from pydantic import BaseModel, TypeAdapter, ValidationError

from . import jsontext
from .spec import ConfigFile, Domain, Network
from .spec_base import check_name

# what one file may cost: a hostile or generated file with 700,000 broken domains
# must not turn into 700,000 log lines and a 100 MB status file
MAX_ERRORS_PER_FILE = 20
_PLAIN = re.compile(r"[A-Za-z0-9_.:<>\[\]-]+")


@dataclass(frozen=True, slots=True)
class ConfigError:
    file: str
    path: str
    reason: str
    loc: tuple[str, ...] = ()  # the path as segments: names may contain "."

    @classmethod
    def at(cls, file: str, loc: tuple[str, ...], reason: str) -> "ConfigError":
        # a segment that is not a plain name (a newline, a space) is shown quoted
        path = ".".join(p if _PLAIN.fullmatch(p) else json.dumps(p) for p in loc)
        return cls(file, path, reason, loc)

    def about(self, kind: str, name: str) -> bool:
        """Whether this error is about the domain or network `name` (exactly, not web2 for web)."""
        return self.loc[:2] == (f"{kind}s", name)

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
    # (kind, name) that a file held for a rule across files declares now: not removed meanwhile
    held_declared: frozenset[tuple[str, str]] = frozenset()

    def held(self, kind: str, name: str, source_file: str | None) -> bool:
        """True when nvirtd must not change or remove this object now."""
        return ((kind, name) in self.conflicts or (kind, name) in self.held_declared
                or (source_file is not None and source_file in self.broken_files))


_ADAPTERS = {"domains": TypeAdapter(Domain), "networks": TypeAdapter(Network)}


def parse_text(file: str, text: str) -> ParsedFile:
    """Parse and validate one file's content. Never raises: any input is a result."""
    if not text.strip():
        return _failed(file, 'the file is empty; write {} for a file that declares nothing')
    try:
        raw = jsontext.loads(text)
    except jsontext.JsonProblem as exc:
        return _failed(file, str(exc))
    if not isinstance(raw, dict):
        return _failed(file, f"the top level must be an object with 'domains' and/or 'networks', not {_json_type(raw)}")
    errors: list[ConfigError] = []
    sections: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key not in _ADAPTERS:
            errors.append(ConfigError.at(file, (key,), f"unknown option {key!r}" + _closest(key, _ADAPTERS)))
        elif not isinstance(value, dict):
            errors.append(ConfigError.at(file, (key,), f"expected an object, got {_json_type(value)} "
                                                       f"{_short(value)}"))
        else:
            sections[key] = _validate_section(file, key, value, errors)
    if errors:
        return ParsedFile(file=file, config=None, errors=_capped(file, errors, raw))
    return ParsedFile(file=file, config=ConfigFile(**sections))


def _validate_section(file: str, key: str, entries: dict[str, Any], errors: list[ConfigError]) -> dict[str, Any]:
    """Each domain (or network) on its own, stopping once the file has enough errors."""
    adapter = _ADAPTERS[key]
    valid: dict[str, Any] = {}
    for name, value in entries.items():
        if len(errors) >= MAX_ERRORS_PER_FILE:
            break
        try:
            check_name(name)
        except ValueError as exc:
            errors.append(ConfigError.at(file, (key, name), str(exc)))
            continue
        try:
            valid[name] = adapter.validate_python(value)
        except ValidationError as exc:
            errors.extend(_translate(file, err, (key, name)) for err in exc.errors(include_url=False))
    return valid


def _capped(file: str, errors: list[ConfigError], raw: dict[str, Any]) -> tuple[ConfigError, ...]:
    if len(errors) < MAX_ERRORS_PER_FILE:
        return tuple(errors)
    objects = sum(len(v) for v in raw.values() if isinstance(v, dict))
    kept = errors[:MAX_ERRORS_PER_FILE]
    return tuple(kept) + (ConfigError.at(file, (), (
        f"only the first {MAX_ERRORS_PER_FILE} errors are shown; validation stopped there "
        f"({objects} domains and networks in the file)")),)


def _short(value: Any) -> str:
    return json.dumps(value, default=str)[:60]


def _failed(file: str, reason: str) -> ParsedFile:
    return ParsedFile(file=file, config=None, errors=(ConfigError.at(file, (), reason),))


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _translate(file: str, err: dict[str, Any], prefix: tuple[str, ...] = ()) -> ConfigError:
    loc = list(prefix) + [str(p) for p in err["loc"]]
    kind = err["type"]
    value = err.get("input")
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    if kind == "enum":
        allowed = err["ctx"]["expected"].replace("'", "")
        allowed = allowed.replace(" or ", ", ")
        reason = f"{value!r} is not one of {allowed}"
    elif kind == "extra_forbidden":
        reason = f"unknown option {loc[-1]!r}" + _closest(loc[-1])
    elif kind == "missing":
        reason = "required option is missing"
    elif kind in ("less_than_equal", "greater_than_equal"):
        bound = err["ctx"]["le" if kind == "less_than_equal" else "ge"]
        reason = f"{_short(value)} is {'more' if kind == 'less_than_equal' else 'less'} than {bound}, the " \
                 f"{'largest' if kind == 'less_than_equal' else 'smallest'} value allowed"
    elif kind in ("int_type", "int_parsing", "bool_type", "bool_parsing", "string_type",
                  "dict_type", "model_type", "model_attributes_type", "int_from_float"):
        expected = {"int": "an integer", "boo": "true or false", "str": "a string",
                    "dic": "an object", "mod": "an object"}[kind[:3]]
        reason = f"expected {expected}, got " + ("null" if value is None else f"{_json_type(value)} {_short(value)}")
    elif kind == "string_pattern_mismatch":
        reason = f"{value!r} does not match {err['ctx']['pattern']}"
    else:
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        reason = msg if kind == "value_error" else f"{msg} (got {_short(value)})"
        if reason.startswith("@"):
            field_path, _, reason = reason[1:].partition(": ")
            loc += field_path.split(".")
    return ConfigError.at(file, tuple(loc), reason)


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


def _closest(key: str, known: Any = None) -> str:
    # the name itself may be an option elsewhere (numa cells have "cpus"): never "did you mean" it
    known = (_KNOWN_KEYS if known is None else set(known)) - {key}
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if not match:
        lowered = {k.lower(): k for k in known}
        if key.lower() in lowered:
            match = [lowered[key.lower()]]
    return f" (did you mean {match[0]!r}?)" if match else ""


def merge(files: Mapping[str, ParsedFile], last_good: Mapping[str, ConfigFile]) -> DesiredState:
    """Merge parsed files into one desired state.

    `files` is every file present now; `last_good` the last content of each file
    that parsed. A broken file contributes its last good content (if it has one).
    A file that breaks a rule spanning files (a MAC or UUID another file uses) is
    held like a broken one: the file that brought the clash is held, the other goes on.
    """
    blamed: dict[str, list[ConfigError]] = {}
    for _ in range(len(files) + 1):  # each round holds at least one more file, or ends
        state, clashes = _merge_once(files, last_good, blamed)
        fresh = [e for e in clashes if e.file not in blamed]
        if not fresh:
            break
        for err in fresh:
            blamed.setdefault(err.file, []).append(err)
    held_errors = tuple(e for errs in blamed.values() for e in errs)
    # what a held file declares may be a VM that only moved into it: like a broken file's, it is kept
    held_declared = _declared_in(files, blamed)
    return DesiredState(domains=state.domains, networks=state.networks, errors=state.errors + held_errors,
                        broken_files=state.broken_files, conflicts=state.conflicts, held_declared=held_declared)


def _declared_in(files: Mapping[str, ParsedFile], held: Iterable[str]) -> frozenset[tuple[str, str]]:
    """(kind, name) that the current content of these held files declares (the ones that parse)."""
    return frozenset((kind, name) for f in held if files[f].ok
                     for kind, objs in (("domain", files[f].config.domains),  # type: ignore[union-attr]
                                        ("network", files[f].config.networks))  # type: ignore[union-attr]
                     for name in objs)


def _merge_once(files: Mapping[str, ParsedFile], last_good: Mapping[str, ConfigFile],
                blamed: Mapping[str, list[ConfigError]]) -> tuple[DesiredState, list[ConfigError]]:
    effective: dict[str, ConfigFile] = {}
    errors: list[ConfigError] = []
    broken: set[str] = set()
    for name in sorted(files):
        parsed = files[name]
        if parsed.ok and name not in blamed:
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
            errors.append(ConfigError.at(
                owners[1], (f"{kind}s", obj_name),
                f"{kind} {obj_name!r} is also declared in {', '.join(o for o in owners if o != owners[1])}; "
                "each name may be declared in one file only (keeping its last good state)",
            ))
    fresh = {name for name, parsed in files.items()
             if parsed.ok and (name not in last_good or last_good[name] != parsed.config)}
    # domains of a file held for a clash still exist for startAfter (no second error for it)
    held = {name for kind, name in _declared_in(files, blamed) if kind == "domain"}
    clashes = _cross_checks(result["domain"], fresh, held)
    state = DesiredState(domains=result["domain"], networks=result["network"], errors=tuple(errors),
                         broken_files=frozenset(broken), conflicts=conflicts)
    return state, clashes


def _cross_checks(domains: Mapping[str, Declared], fresh: set[str], held: set[str] = frozenset()) -> list[ConfigError]:
    """Rules that span files: MACs and UUIDs must be unique (libvirt would refuse the
    second define, or worse, two guests would share a MAC on one LAN), and startAfter must
    name declared domains without a cycle (core/start_order.py). Each error
    names the file to hold: the one that changed since its last good content (it
    brought the clash), else the later one."""
    from .identity import interface_mac, domain_uuid  # local: identity imports spec only
    from .start_order import order_problems

    errors: list[ConfigError] = []
    seen: dict[str, tuple[str, tuple[str, ...]]] = {}  # "mac X" / "uuid X" -> (file, loc)

    def claim(what: str, file: str, loc: tuple[str, ...]) -> None:
        if what not in seen:
            seen[what] = (file, loc)
            return
        other_file, other_loc = seen[what]
        other_fresh, this_fresh = other_file in fresh, file in fresh
        if other_fresh and not this_fresh:  # the other file brought it: hold that one
            file, loc, other_file, other_loc = other_file, other_loc, file, loc
            seen[what] = (other_file, other_loc)
        errors.append(ConfigError.at(file, loc, (
            f"{what.split()[0].upper()} {what.split()[1]} is also used by {other_file}: {'.'.join(other_loc)} "
            "(this file keeps its last good state until one of them changes)")))

    order = {name: (decl.file, decl.spec.start_after) for name, decl in domains.items()}  # type: ignore[attr-defined]
    for file, dom_name, problem in order_problems(order, also_declared=held):
        errors.append(ConfigError.at(file, ("domains", dom_name, "startAfter"), problem))
    for dom_name, decl in sorted(domains.items(), key=lambda item: (item[1].file, item[0])):
        dom: Domain = decl.spec  # type: ignore[assignment]
        uuid = domain_uuid(dom_name, dom.uuid)
        if dom.uuid is not None:
            claim(f"uuid {uuid}", decl.file, ("domains", dom_name, "uuid"))
        for nic_name, nic in dom.interfaces.items():
            mac = interface_mac(uuid, nic_name, nic.mac)
            claim(f"mac {mac}", decl.file, ("domains", dom_name, "interfaces", nic_name, "mac"))
        for dev_name, dev in dom.hostdevs.items():  # a device goes to one guest: the second start would fail
            claim(dev.identity, decl.file, ("domains", dom_name, "hostdevs", dev_name))
    return errors
