"""What one full listing of the domains tells, kept for the first look at each: part of
the libvirt adapter (hypervisor.py).

- Facts: from four listings filtered by libvirt, each domain's power, persistence and
  autostart, which the first look at it uses instead of three RPCs of its own.
- Early looks (`list_domains(look_at_each=True)`): every listed domain is also looked at
  at once, in two thread jobs, and the look is kept for the first `observe_domain` of
  it. The daemon lists this way while it reads its files, so a restart on 1,000 running
  domains makes its 2,000 reads (each definition and each running instance's owner)
  while the files are validated, and its passes then take no thread hop at all.

A kept fact or look is used once, and dropped the moment anything happens to the domain:
an event (libvirt's event thread calls `forget` before it hands the event on), a change
of ours, or any look at it. A fact or look taken before an event and stored after it is
never kept: a listing begins its generation before its RPCs, `forget` and the stores take
the same lock, and a name forgotten since the listing began stays forgotten until the next.
"""

from __future__ import annotations

import asyncio
import threading
import xml.etree.ElementTree as ET
from typing import Any, NamedTuple

import libvirt

from ..core.observed import ObservedDomain, Power
from ..core.ownership import fingerprint, parse_owner, parse_owner_element

# listings by state a look can take a domain's power from (paused ones need state()'s reason)
_LISTED_POWER = {libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING: Power.running,
                 libvirt.VIR_CONNECT_LIST_DOMAINS_SHUTOFF: Power.shutoff}
_AUTOSTART = libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART
_LISTED = (*_LISTED_POWER, libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT, _AUTOSTART)
LOOK_JOBS = 2  # thread jobs: measured 0.83 s to READY with 1, 0.79 with 2 or 4 (1,000 running, 2 cores)


class Reading(NamedTuple):
    """What the RPCs of one look at a domain returned, before any parsing."""
    name: str
    power: Power
    persistent: bool
    autostart: bool
    xml: str  # the persistent definition (inactive XML)
    live: str | None  # the running instance's owner element; "" if it has none; None if not read


def interpret(r: Reading) -> ObservedDomain:
    root = ET.fromstring(r.xml)
    owner = parse_owner(root)
    live_hash = live_owner = None
    if owner is not None and r.power.active:
        live_owner = parse_owner_element(r.live) if r.live else None
        live_hash = live_owner.spec_hash if live_owner else ""
    nets = tuple(s.get("network", "") for s in root.findall("./devices/interface[@type='network']/source"))
    return ObservedDomain(
        name=r.name, uuid=root.findtext("uuid") or "", power=r.power, owner=owner, live_spec_hash=live_hash,
        fingerprint=fingerprint(r.xml), autostart=r.autostart, persistent=r.persistent, networks=nets,
        live_owner=live_owner,
    )


class Listing:
    """Thread-safe: the listing and the early looks run in the pool, events come from
    libvirt's event thread, changes and looks from the loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._facts: dict[str, tuple[Power, bool, bool]] = {}
        self._looks: dict[str, Reading] = {}
        self._spent: set[str] = set()  # forgotten or looked at since the listing: nothing of it is kept

    def begin(self) -> int:
        """A new listing, before its RPCs: what anything of the older ones said is gone,
        and an event from now on drops what this one tells of its domain."""
        with self._lock:
            self._generation += 1
            self._facts, self._looks, self._spent = {}, {}, set()
            return self._generation

    def install(self, facts: dict[str, tuple[Power, bool, bool]], generation: int) -> set[str]:
        """The listing's facts, but none of a domain that had an event since begin();
        returns those names (they exist, or did: each costs a lookup, not a wrong answer)."""
        with self._lock:
            if generation == self._generation:
                self._facts = {name: f for name, f in facts.items() if name not in self._spent}
            return set(self._spent)

    def forget(self, name: str) -> None:
        with self._lock:
            self._facts.pop(name, None)
            self._looks.pop(name, None)
            self._spent.add(name)

    def facts_of(self, name: str) -> tuple[Power, bool, bool] | None:
        with self._lock:
            return self._facts.pop(name, None)

    def take_look(self, name: str) -> Reading | None:
        """The early look at `name` if one is kept; either way the next look is its own."""
        with self._lock:
            self._spent.add(name)
            return self._looks.pop(name, None)

    def wants_look(self, name: str, generation: int) -> bool:
        with self._lock:
            return generation == self._generation and name not in self._spent

    def keep_look(self, name: str, seen: Reading, generation: int) -> None:
        with self._lock:
            if generation == self._generation and name not in self._spent:
                self._looks[name] = seen


class Listings:
    """Mixed into Hypervisor, which provides _run, _c, _doms, known, _threads and
    _read_domain."""

    _run: Any
    _c: Any
    _doms: dict[str, Any]
    known: set[str] | None
    _threads: int
    _read_domain: Any
    _listing: Listing

    async def list_domains(self, *, look_at_each: bool = False) -> list[str]:
        """Every domain's name, with its listed facts kept; with look_at_each, each
        listed domain is looked at too (see the module's docstring)."""
        def listing() -> tuple[list[Any], int, set[str]]:
            conn = self._c()
            generation = self._listing.begin()
            doms = conn.listAllDomains()
            flagged = {flag: {d.name() for d in conn.listAllDomains(flag)} for flag in _LISTED}
            facts = {}
            for d in doms:
                name = d.name()
                power = next((p for flag, p in _LISTED_POWER.items() if name in flagged[flag]), None)
                if power is not None:
                    persistent = name in flagged[libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT]
                    facts[name] = (power, persistent, persistent and name in flagged[_AUTOSTART])
            return doms, generation, self._listing.install(facts, generation)
        doms, generation, touched = await self._run(listing)
        for dom in doms:
            self._doms.setdefault(dom.name(), dom)
        names = sorted({d.name() for d in doms})
        self.known = set(names) | touched  # a name an event brought while listing exists too
        if look_at_each and names:
            jobs = min(LOOK_JOBS, self._threads, len(names))
            await asyncio.gather(*(self._run(self._look_early, names[i::jobs], generation) for i in range(jobs)))
        return names

    def _look_early(self, names: list[str], generation: int) -> None:
        for name in names:
            if not self._listing.wants_look(name, generation):
                continue  # looked at already, or changed: the pipeline's own look will do
            try:
                seen = self._read_domain(name)  # parsed by the look that takes it, on the loop
            except libvirt.libvirtError:
                continue  # not kept: the first look of its own meets the error and reports it
            if seen is not None:
                self._listing.keep_look(name, seen, generation)
