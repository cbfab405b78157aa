"""What the world told us: libvirt's domains and networks, and the disk images.

PURE: standard library only. The adapters fill these frozen values in; plan()
reads them. Nothing here talks to libvirt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .network_xml import StaticHost
from .ownership import Owner


class Power(StrEnum):
    running = "running"
    starting = "starting"  # paused by libvirt itself while it brings the guest up
    migrating = "migrating"  # paused by libvirt for a live migration's last step, or arriving by one
    paused = "paused"
    shutting_down = "shutting-down"
    shutoff = "shutoff"
    crashed = "crashed"
    pmsuspended = "pmsuspended"
    other = "other"

    @property
    def active(self) -> bool:
        return self is not Power.shutoff


@dataclass(frozen=True, slots=True)
class ObservedDomain:
    name: str
    uuid: str
    power: Power
    owner: Owner | None  # from the persistent (next boot) definition; None: not nvirtd's
    live_spec_hash: str | None  # spec hash the running instance was started with
    fingerprint: str  # hash of libvirt's inactive XML, without metadata
    autostart: bool
    persistent: bool = True
    networks: tuple[str, ...] = ()  # libvirt networks its NICs use
    live_owner: Owner | None = None  # the running instance's owner element (it holds shutdown-started)

    @property
    def owned(self) -> bool:
        return self.owner is not None


@dataclass(frozen=True, slots=True)
class ObservedNetwork:
    name: str
    uuid: str
    active: bool
    owner: Owner | None
    live_spec_hash: str | None
    fingerprint: str
    autostart: bool
    persistent: bool = True
    live_restart_hash: str | None = None  # the running network's, None if unknown
    live_hosts: frozenset[StaticHost] = frozenset()  # static DHCP/DNS hosts it serves now

    @property
    def owned(self) -> bool:
        return self.owner is not None


class BuildPhase(StrEnum):
    idle = "idle"  # never requested in this daemon's life (or invalidated by a reload)
    building = "building"
    built = "built"
    failed = "failed"


@dataclass(frozen=True, slots=True)
class BuildState:
    phase: BuildPhase = BuildPhase.idle
    image: str | None = None  # store path of the qcow2 image once built
    error: str | None = None  # tail of the build log when failed
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class OverlayState:
    """A nix disk of one domain: its overlay on disk and its base image's build."""

    disk: str
    overlay: str
    exists: bool
    backing: str | None  # backing file recorded in the overlay (qemu-img info)
    backing_present: bool
    build: BuildState
    recreate_on_change: bool = False
    rooted: bool = True  # the base image has nvirtd's GC root (a base in use must never be collected)
    actual_size: int = 0  # bytes on disk, and the size the guest sees (for the status)
    virtual_size: int = 0
    wanted_size: int | None = None  # the declared nix.size in bytes; None: whatever it was created with
    settings: str = "nix"  # where its settings are: "nix" (a nix disk) or "image" (an image disk)

    @property
    def names(self) -> str:
        """How the config comes to its base, for messages."""
        return "builds" if self.settings == "nix" else "names"


@dataclass(frozen=True, slots=True)
class PeerHold:
    """What one other host of a fleet has of a domain (read only, adapters/hypervisor_fleet.py)."""

    host: str
    reachable: bool = True
    problem: str = ""  # why it could not be asked
    held: bool = False  # it has the domain (of this instance), running or not
    running: bool = False
    arrival: str | None = None  # its definition is an arrival it prepares: "preparing" | "ready"
    arriving_from: str | None = None  # ... for a move from this host
    backings: tuple[tuple[str, str], ...] = ()  # a running domain's (overlay, base) pairs, from its live XML
    leaving_for: str | None = None  # it runs there, that host is drained, and it goes to this host
    move_error: str | None = None  # why that host's last live migration of it failed


@dataclass(frozen=True, slots=True)
class NetworkLink:
    """A declared network a domain's NIC needs, as libvirt has it now."""

    name: str
    active: bool
    instance: str | None  # the nvirtd instance that owns it; None: not nvirtd's (or not there)


@dataclass(frozen=True, slots=True)
class DomainObservation:
    """Everything a domain's plan reads of the world, looked at in one pass."""

    domain: ObservedDomain | None
    overlays: tuple[OverlayState, ...] = ()
    missing_paths: tuple[str, ...] = ()  # "file: field: path does not exist", for each one missing
    networks: tuple[NetworkLink, ...] = ()  # looked at only when the domain is not running
    # the disk files the running instance has open; looked at only when a disk is to grow
    # (None: not looked at): a disk it lacks (added for the next boot) grows offline
    live_disks: frozenset[str] | None = None
    # startAfter, looked at only when it matters: the domains a start waits for that do not run
    # yet; for a removal, the domains depending on this one that still run; and who to wake
    # once this one runs (its dependents) or is gone (what it started after)
    waiting_for: tuple[str, ...] = ()
    dependents_running: tuple[str, ...] = ()
    wake_after: tuple[str, ...] = ()
    # the devices libvirt's live XML shows (NIC MACs, disk aliases): looked at only while an
    # unplug is pending (None: not looked at); and whether the driver can plug devices at all
    live_devices: frozenset[str] | None = None
    hotplug: bool = True
    # the cloud-init seed: whether its file is still to be written, and the domain's seeds of
    # other content (looked at for domains with cloudInit only)
    seed_missing: bool = False
    stale_seeds: tuple[str, ...] = ()
    # what the fleet's other hosts have of it, asked only when it matters (core/fleet_moves.py):
    # before it is first defined here, while it arrives or leaves
    peers: tuple[PeerHold, ...] = ()
    # its disks whose overlay is here although another host runs it (a copy left by a move)
    stale_overlays: tuple[str, ...] = ()
    bases_here: frozenset[str] = frozenset()  # of the bases the host that runs it has, those this one has too
    peer_recheck: float = 30.0  # how often the other hosts are asked again (`nvirtd run --peer-interval`)

    @property
    def held_elsewhere(self) -> tuple[str, ...]:
        """The other hosts that hold it, or cannot say they do not (a host that is down may
        still have it on its disks)."""
        return tuple(f"host {p.host!r}" + (f" (unreachable: {p.problem})" if not p.reachable else "")
                     for p in self.peers if p.held or not p.reachable)

    def runs_on(self) -> PeerHold | None:
        """The one other host that runs it, when every other one is known not to hold it."""
        running = [p for p in self.peers if p.running]
        others = [p for p in self.peers if not p.running and (p.held or not p.reachable)]
        return running[0] if len(running) == 1 and not others else None

    def peer(self, host: str) -> PeerHold | None:
        return next((p for p in self.peers if p.host == host), None)

    @property
    def owner(self) -> Owner | None:
        return self.domain.owner if self.domain is not None else None

    def networks_down(self, instance: str) -> tuple[str, ...]:
        """Needed networks that are not up as this instance's network (yet)."""
        return tuple(sorted({n.name for n in self.networks if not n.active or n.instance != instance}))


@dataclass(frozen=True, slots=True)
class NetworkObservation:
    network: ObservedNetwork | None
    used_by: tuple[str, ...] = ()  # domains libvirt has whose NICs use it (looked at for a removal only)

    @property
    def owner(self) -> Owner | None:
        return self.network.owner if self.network is not None else None


class DomainEvent(StrEnum):
    """libvirt's domain lifecycle events, as both hypervisor implementations name them."""

    defined = "defined"
    undefined = "undefined"
    started = "started"
    suspended = "suspended"
    resumed = "resumed"
    stopped = "stopped"
    shutdown = "shutdown"
    pmsuspended = "pmsuspended"
    crashed = "crashed"
    device_removed = "device-removed"  # a guest released an unplugged device
    other = "other"  # one this libvirt knows and nvirtd does not: still a change
