"""What the daemon needs of a hypervisor: the interface both implementations keep.

`Hypervisor` (hypervisor.py) is libvirt; `FakeHypervisor` (fake_hypervisor.py) is an
in-memory model of the libvirt semantics nvirtd depends on, for deterministic tests
and simulation. tests/adapters/test_hypervisor_contract.py runs one suite against
both, so the fake cannot drift from the real thing unnoticed.

Domain changes go through `apply(name, ops)`, a list of (operation, argument) run in
order on the object the last look saw (never on whatever has the name now):
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Protocol

from ..core.network_xml import StaticHost
from ..core.observed import ObservedDomain, ObservedNetwork
from ..core.spec import VirtType
from .hostnet import GuestTap

# operation -> its argument, for apply()
DOMAIN_OPS = {
    "define_domain": "(xml, Owner): define, then record the owner with libvirt's fingerprint",
    "set_owner": "Owner: the owner element of the persistent definition, nothing else",
    "set_autostart": "bool",
    "start": "None: already running is done",
    "mark_shutdown": "Owner: the live owner element, with when the shutdown began",
    "shutdown": "None: ACPI; gone or already off is done",
    "destroy": "None: gone or already off is done",
    "undefine": "None: keeps NVRAM and TPM state; gone is done",
}
DOMAIN_EVENTS = ("defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
                 "pmsuspended", "crashed")


class HypervisorLike(Protocol):
    uri: str
    mutations: collections.Counter[str]
    known: set[str] | None
    on_domain_event: Callable[[str, str], None]
    on_network_event: Callable[[str], None]
    on_close: Callable[[str], None]
    event_filter: Callable[[str, str], bool]

    @property
    def mutation_count(self) -> int: ...
    async def connect(self, *, timeout: float = 15.0) -> None: ...
    async def close(self, *, timeout: float = 2.0) -> None: ...
    def shutdown_pool(self) -> None: ...
    async def default_virt_type(self) -> VirtType: ...
    async def list_domains(self) -> list[str]: ...
    async def list_networks(self) -> list[str]: ...
    async def observe_domain(self, name: str) -> ObservedDomain | None: ...
    async def domains_using_network(self, network: str) -> list[str]: ...
    async def apply(self, name: str, ops: list[tuple[str, Any]]) -> None: ...
    async def observe_network(self, name: str) -> ObservedNetwork | None: ...
    async def define_network(self, xml: str) -> str: ...
    async def set_network_autostart(self, name: str, on: bool) -> None: ...
    async def start_network(self, name: str, xml: str | None = None) -> None: ...
    async def destroy_network(self, name: str) -> None: ...
    async def update_network_hosts(self, name: str, updates: tuple[tuple[str, StaticHost], ...]) -> None: ...
    async def undefine_network(self, name: str) -> None: ...
    async def network_taps(self, network: str) -> tuple[str, list[GuestTap]]: ...
