"""What the daemon needs of a hypervisor: the interface both implementations keep.

`Hypervisor` (hypervisor.py) is libvirt; `FakeHypervisor` (fake_hypervisor.py) is an
in-memory model of the libvirt semantics nvirtd depends on, for deterministic tests
and simulation. tests/adapters/test_hypervisor_contract.py runs one suite against
both, so the fake cannot drift from the real thing unnoticed.

Domain changes go through `apply(name, ops)`: typed operations run in order on the
object the last look saw (never on whatever has the name now). Events come to the
one `EventSink` given to `subscribe`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from ..core.network_xml import StaticHost
from ..core.observed import DomainEvent, NetworkLink, ObservedDomain, ObservedNetwork
from ..core.ownership import Owner
from ..core.spec import VirtType
from .hostnet import GuestTap


@dataclass(frozen=True, slots=True)
class DefineDomain:
    """Define, then record the owner with libvirt's fingerprint of what it stored (the real
    adapter may write that record after the starts; no look sees the domain without it)."""
    xml: str
    owner: Owner
    counter: ClassVar[str] = "define_domain"


@dataclass(frozen=True, slots=True)
class SetOwner:
    """The owner element of the persistent definition, nothing else."""
    owner: Owner
    counter: ClassVar[str] = "set_owner"


@dataclass(frozen=True, slots=True)
class SetAutostart:
    on: bool
    counter: ClassVar[str] = "set_autostart"


@dataclass(frozen=True, slots=True)
class Start:
    """Already running is done. `paused`: its vCPUs do not run (a stopped VM's move, core/fleet_moves.py)."""
    paused: bool = False
    counter: ClassVar[str] = "start"


@dataclass(frozen=True, slots=True)
class MarkShutdown:
    """The live owner element, with when the graceful shutdown began; gone or off is done."""
    owner: Owner
    counter: ClassVar[str] = "mark_shutdown"


@dataclass(frozen=True, slots=True)
class Shutdown:
    """ACPI power button; gone or already off is done."""
    counter: ClassVar[str] = "shutdown"


@dataclass(frozen=True, slots=True)
class Destroy:
    """Gone or already off is done."""
    counter: ClassVar[str] = "destroy"


@dataclass(frozen=True, slots=True)
class Undefine:
    """Keeps NVRAM and TPM state; gone is done."""
    counter: ClassVar[str] = "undefine"


@dataclass(frozen=True, slots=True)
class ResizeDisk:
    """Grow the running guest's disk backed by `path` to `size` bytes (blockResize). Refused,
    before anything changes, when that would shrink it or when no running guest has it."""
    path: str
    size: int
    counter: ClassVar[str] = "resize_disk"


@dataclass(frozen=True, slots=True)
class SetVcpus:
    """The running guest's vCPUs (live only: the definition already says it)."""
    count: int
    counter: ClassVar[str] = "set_vcpus"


@dataclass(frozen=True, slots=True)
class SetMemory:
    """The running guest's balloon target, in KiB (live only)."""
    kib: int
    counter: ClassVar[str] = "set_memory"


@dataclass(frozen=True, slots=True)
class AttachDevice:
    """Plug a device into the running guest (live only); already there (`ident`: a NIC's MAC,
    a disk's alias) is done. A driver that cannot plug devices raises HotplugUnsupported."""
    xml: str
    ident: str
    counter: ClassVar[str] = "attach_device"


@dataclass(frozen=True, slots=True)
class DetachDevice:
    """Ask the running guest to release a device (live only); gone is done. It returns once
    asked: the device-removed event, or a later look (live_devices), confirms it."""
    ident: str
    counter: ClassVar[str] = "detach_device"


@dataclass(frozen=True, slots=True)
class SetLiveOwner:
    """The running instance's owner element: what it has now (core/live_changes.py)."""
    owner: Owner
    counter: ClassVar[str] = "set_live_owner"


DomainOp = (DefineDomain | SetOwner | SetAutostart | Start | MarkShutdown | Shutdown | Destroy | Undefine | ResizeDisk
            | SetVcpus | SetMemory | AttachDevice | DetachDevice | SetLiveOwner)


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """How a live migration goes (a domain's `migration`, core/spec_fleet.py)."""

    timeout: float = 300.0
    postcopy: bool = False  # past the timeout, switch to post-copy instead of aborting
    auto_converge: bool = True  # throttle the guest's vCPUs if its memory changes faster than it is sent
    tls: bool = False  # QEMU's migration stream over TLS (libvirt's migrate_tls_* settings)
    paused: bool = False  # it stays paused on the destination (a stopped VM, started paused to move)
    bandwidth: int | None = None  # MiB/s, for memory and disks; None: no limit


@dataclass(slots=True)
class EventSink:
    """Where a hypervisor delivers what libvirt tells: on the asyncio loop, except `drop`,
    which runs where the event arrives (libvirt's event thread) and must be thread-safe:
    True drops an event nvirtd expected (its own action's echo) before it wakes the loop."""

    domain: Callable[[str, DomainEvent], None] = lambda name, event: None
    network: Callable[[str], None] = lambda name: None
    closed: Callable[[str], None] = lambda reason: None
    drop: Callable[[str, DomainEvent], bool] = lambda name, event: False


class HypervisorLike(Protocol):
    uri: str
    mutations: collections.Counter[str]
    known: set[str] | None
    events: EventSink
    hotplug: bool  # False once the driver refused to plug a device (libvirt's test driver)

    @property
    def mutation_count(self) -> int: ...
    def subscribe(self, sink: EventSink) -> None: ...
    async def connect(self, *, timeout: float = 15.0) -> None: ...
    async def close(self, *, timeout: float = 2.0) -> None: ...
    def shutdown_pool(self) -> None: ...
    async def default_virt_type(self) -> VirtType: ...
    async def list_domains(self, *, look_at_each: bool = False) -> list[str]: ...
    async def list_networks(self) -> list[str]: ...
    async def observe_domain(self, name: str) -> ObservedDomain | None: ...
    async def domains_using_network(self, network: str) -> list[str]: ...
    async def apply(self, name: str, ops: list[DomainOp]) -> None: ...
    async def settle(self) -> None: ...
    async def observe_network(self, name: str) -> ObservedNetwork | None: ...
    async def network_link(self, name: str) -> NetworkLink: ...
    async def live_disks(self, name: str) -> frozenset[str]: ...
    async def live_devices(self, name: str) -> frozenset[str]: ...
    async def agent_answers(self, name: str) -> bool: ...
    async def migrate(self, name: str, dest_uri: str, *, overlays: frozenset[str],
                      settings: MigrationSettings) -> None: ...
    async def define_network(self, xml: str) -> str: ...
    async def set_network_autostart(self, name: str, on: bool) -> None: ...
    async def start_network(self, name: str, xml: str | None = None) -> None: ...
    async def destroy_network(self, name: str) -> None: ...
    async def update_network_hosts(self, name: str, updates: tuple[tuple[str, StaticHost], ...]) -> None: ...
    async def undefine_network(self, name: str) -> None: ...
    async def network_taps(self, network: str) -> tuple[str, list[GuestTap]]: ...
