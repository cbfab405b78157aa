"""The shell of a fleet's moves (core/fleet_moves.py plans them): what the other hosts have
of a domain, asked only when it matters, and the two steps that act on what they said.

The other hosts are asked when a domain placed here is not defined here yet (one may
hold it), while it arrives, while it runs here placed elsewhere (is its new host ready?),
and when an overlay of a domain not defined here is still here (does another host run it
now?). Each answer is one read-only lookup per host (adapters/hypervisor_fleet.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable

import structlog

from .adapters import hypervisor_fleet
from .adapters.hypervisor_protocol import HypervisorLike, MigrationSettings, SetLiveOwner
from .adapters.images import Images
from .core import identity
from .core.domain_xml import RenderedDomain
from .core.fleet_moves import comes_here, is_arrival, parse_marker
from .core.placement import is_me
from .core.observed import DomainObservation, ObservedDomain, PeerHold
from .core.ownership import DEFAULT_INSTANCE, Owner
from .core.spec_fleet import OnTimeout
from .errors import HypervisorError, PermanentError

log = structlog.get_logger("nvirtd.domains")


class Moves:
    def __init__(self, hv: HypervisorLike, images: Images, *, images_dir: str, instance: str = DEFAULT_INSTANCE,
                 peers: tuple[tuple[str, str], ...] = (), host: str = "", peer_interval: float = 30.0,
                 placed_elsewhere: Callable[[str], str | None] = lambda name: None) -> None:
        self.hv = hv
        self.images = images
        self.images_dir = images_dir
        self.instance = instance
        self.host = host
        self.peers = dict(peers)  # host -> libvirt URI (read-only questions; the migration's destination)
        self.peer_interval = peer_interval
        self.placed_elsewhere = placed_elsewhere

    # ---- observe --------------------------------------------------------------------
    async def observe(self, name: str, desired: RenderedDomain | None,
                      observed: ObservedDomain | None) -> dict[str, object]:
        """The fleet's part of a domain's observation (DomainObservation's fields)."""
        if not self.peers or desired is None:
            return {}
        where = self.placed_elsewhere(name)
        # overlays here of a domain not defined here: only then is a file looked at
        here = [p for p in self._overlay_paths(name, desired) if os.path.exists(p[1])] if observed is None else []
        if where is None:
            ask = observed is None or is_arrival(observed)
            hosts = list(self.peers) if ask else []
        elif observed is not None:  # it leaves from here: is that host ready?
            hosts = [where] if where in self.peers else []
        elif here:
            hosts = list(self.peers)  # a copy left here by a move?
        else:  # an alternative of a host that may be drained: does its VM come here?
            mine = any(is_me(h, self.host) for h in desired.spec.hosts)
            hosts = [where] if mine and where in self.peers else []
        if not hosts:
            return {}
        peers = tuple([await self._ask(host, name) for host in hosts])
        found: dict[str, object] = {"peers": peers, "peer_recheck": self.peer_interval}
        runners = [p for p in peers if p.running]
        if len(runners) != 1:
            return found
        found["bases_here"] = frozenset(base for _, base in runners[0].backings if os.path.exists(base))
        if observed is None:  # (an arrival's overlays here are the ones it made)
            found["stale_overlays"] = tuple(disk for disk, _ in here)
        return found

    def comes_here(self, fleet: dict[str, object]) -> bool:
        """Whether a domain placed elsewhere comes here: its host is drained, and this is where to."""
        return comes_here(DomainObservation(None, **fleet), self.host)  # type: ignore[arg-type]

    def _overlay_paths(self, name: str, desired: RenderedDomain) -> Iterable[tuple[str, str]]:
        return [(d, identity.overlay_path(self.images_dir, name, d)) for d, disk in desired.spec.disks.items()
                if disk.overlaid]

    async def _ask(self, host: str, name: str) -> PeerHold:
        try:
            held = await hypervisor_fleet.holds(self.peers[host], name, self.instance)
        except hypervisor_fleet.PeerUnreachable as exc:
            return PeerHold(host, reachable=False, problem=str(exc))
        if held is None:
            return PeerHold(host)
        return PeerHold(host, held=True, running=held.running, arrival=held.arrival,
                        arriving_from=held.arriving_from, backings=held.backings, leaving_for=held.leaving_for,
                        move_error=held.move_error)

    # ---- execute --------------------------------------------------------------------
    async def migrate(self, name: str, desired: RenderedDomain | None, host: str, *, paused: bool = False) -> None:
        uri = self.peers.get(host)
        if uri is None or desired is None:
            raise PermanentError(f"no --peer names host {host!r}")
        spec = desired.spec.migration
        settings = MigrationSettings(timeout=float(spec.timeout), postcopy=spec.on_timeout == OnTimeout.postcopy,
                                     auto_converge=spec.auto_converge, tls=spec.tls, paused=paused,
                                     bandwidth=spec.bandwidth)
        overlays = frozenset(path for _, path in self._overlay_paths(name, desired))
        log.info("domain_migrating", domain=name, to=host, uri=uri, overlays=sorted(overlays))
        try:
            await self.hv.migrate(name, uri, overlays=overlays, settings=settings)
        except HypervisorError as exc:
            await self._record_failure(name, str(exc))
            raise
        log.info("domain_migrated", domain=name, to=host)
        # no QEMU here has them open now: kept aside at once (a stopped VM's new host does not
        # run it, so the plan's own set-aside, which waits to see it run there, would not come)
        for disk, _ in self._overlay_paths(name, desired):
            self.set_aside(name, disk, f"moved-to-{host}")

    async def _record_failure(self, name: str, why: str) -> None:
        """Why the move failed, in the running VM's live metadata: the host it was to go to shows it."""
        seen = await self.hv.observe_domain(name)
        if seen is None or not seen.power.active or seen.owner is None:
            return
        live = seen.live_owner or Owner(file=seen.owner.file, spec_hash="")
        try:
            await self.hv.apply(name, [SetLiveOwner(dataclasses.replace(live, move_error=why[:400]))])
        except HypervisorError:  # the failure itself is what the status says
            pass

    def set_aside(self, name: str, disk: str, reason: str) -> None:
        overlay = identity.overlay_path(self.images_dir, name, disk)
        if os.path.exists(overlay):
            self.images.move_aside(overlay, domain=name, disk=disk, reason=reason)


def with_arrival(owner: Owner, detail: str | None) -> Owner:
    """The owner element with an arrival's marker (core/fleet_moves.marker), or without one."""
    arrival, source = parse_marker(detail)
    return dataclasses.replace(owner, arrival=arrival, arriving_from=source)
