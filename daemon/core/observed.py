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
