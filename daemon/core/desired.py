"""Render the merged config into what libvirt should hold, and diff two renderings.

PURE: standard library only (plus the spec models).

A domain or network whose rendering fails (e.g. a static lease naming a domain
that has no NIC on the network) gets a ConfigError with its file and path, and its
whole file is held at its last good rendering, as for a broken file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .config import ConfigError, DesiredState
from .keys import Key, Kind
from .domain_xml import RenderContext, RenderedDomain, render_domain
from .network_xml import RenderedNetwork, render_network
from .spec import Domain, Network


@dataclass(frozen=True, slots=True)
class Rendered:
    state: DesiredState
    domains: Mapping[str, RenderedDomain] = field(default_factory=dict)
    networks: Mapping[str, RenderedNetwork] = field(default_factory=dict)
    errors: tuple[ConfigError, ...] = ()
    held_keys: frozenset[tuple[str, str]] = frozenset()  # failed to render: keep last good

    def held(self, kind: str, name: str, source_file: str | None) -> bool:
        return (kind, name) in self.held_keys or self.state.held(kind, name, source_file)

    @property
    def holding(self) -> tuple[object, ...]:
        """What holds objects back: broken files, files held for a rule across files and what
        they declare, objects that failed to render. A change of it decides the held ones again."""
        return self.state.broken_files, self.state.held_declared, self.held_keys

    @property
    def all_errors(self) -> tuple[ConfigError, ...]:
        return self.state.errors + self.errors


def render_all(state: DesiredState, ctx: RenderContext, previous: Rendered | None = None) -> Rendered:
    """Render every declared object; `previous` (same ctx) lets unchanged domains be reused."""
    domains: dict[str, RenderedDomain] = {}
    networks: dict[str, RenderedNetwork] = {}
    errors: list[ConfigError] = []
    held: set[tuple[str, str]] = set()
    specs: dict[str, Domain] = {n: d.spec for n, d in state.domains.items()}  # type: ignore[misc]
    reuse = previous.domains if previous is not None else {}
    for name, decl in state.domains.items():
        old = reuse.get(name)
        if old is not None and old.source_file == decl.file and (old.spec is decl.spec or old.spec == decl.spec):
            domains[name] = old  # unchanged: a no-op reload of 1,000 domains renders nothing
            continue
        try:
            domains[name] = render_domain(name, decl.spec, ctx, source_file=decl.file)  # type: ignore[arg-type]
        except ValueError as exc:
            errors.append(ConfigError.at(decl.file, ("domains", name), str(exc)))
    for name, decl in state.networks.items():
        spec: Network = decl.spec  # type: ignore[assignment]
        try:
            networks[name] = render_network(name, spec, specs, source_file=decl.file, instance=ctx.instance)
        except ValueError as exc:
            errors.append(ConfigError.at(decl.file, ("networks", name, "dhcp", "hosts"), str(exc)))
    failed_files = {e.file for e in errors}
    for kind, objs in (("domain", state.domains), ("network", state.networks)):
        held |= {(kind, name) for name, decl in objs.items() if decl.file in failed_files}
    for kind, name in held:  # not applied: the last good rendering stays (or nothing, if none)
        (domains if kind == "domain" else networks).pop(name, None)  # type: ignore[attr-defined]
    if previous is not None:
        for kind, name in held:
            old = (previous.domains if kind == "domain" else previous.networks).get(name)
            if old is not None:
                (domains if kind == "domain" else networks)[name] = old  # type: ignore[index]
    return Rendered(state=state, domains=domains, networks=networks, errors=tuple(errors),
                    held_keys=frozenset(held))


def changed_keys(old: Rendered | None, new: Rendered) -> set[Key]:
    """Keys whose desired state differs: only these need a reconcile after a reload."""
    if old is None:
        return {Key(Kind.domain, n) for n in new.domains} | {Key(Kind.network, n) for n in new.networks}
    keys: set[Key] = set()
    for kind, a, b in ((Kind.domain, old.domains, new.domains), (Kind.network, old.networks, new.networks)):
        for name in set(a) | set(b):
            if a.get(name) != b.get(name):
                keys.add(Key(kind, name))
    flagged_old = set(old.held_keys) | set(old.state.conflicts)
    flagged_new = set(new.held_keys) | set(new.state.conflicts)
    keys |= {Key(Kind(kind), name) for kind, name in flagged_old ^ flagged_new}
    if old.state.broken_files != new.state.broken_files:
        touched = old.state.broken_files ^ new.state.broken_files
        for kind, objs in ((Kind.domain, new.state.domains), (Kind.network, new.state.networks)):
            keys |= {Key(kind, n) for n, d in objs.items() if d.file in touched}
    return keys
