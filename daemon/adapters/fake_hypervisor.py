"""An in-memory libvirt, as far as nvirtd depends on it: the fake side of HypervisorLike.

It models what the daemon's promises rest on: persistent vs transient domains, the
inactive definition vs the running instance (each with its own metadata), objects
named by UUID behind their names (a change goes to the object the last look saw),
lifecycle events delivered on the loop after the call that caused them (and none
while disconnected), libvirt's refusals, a connection that can drop, and guests
that obey or ignore ACPI. It never sleeps and starts no thread: with a virtual
clock, the whole daemon runs on it deterministically.

tests/adapters/test_hypervisor_contract.py holds it to libvirt's test driver.
Out-of-band actions (what an administrator does with virsh) are the `oob_*` methods.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from ..core.live_changes import live_idents
from ..core.observed import DomainEvent, ObservedDomain, Power
from ..core.ownership import Owner, fingerprint, owner_element, parse_owner
from ..core.spec import VirtType
from ..errors import ConnectionLost, HypervisorError
from . import fake_hypervisor_live as live
from .fake_hypervisor_networks import FakeNetwork, FakeNetworkOps
from .hypervisor_protocol import (AttachDevice, DefineDomain, Destroy, DetachDevice, DomainOp, EventSink, MarkShutdown,
                                  ResizeDisk, SetAutostart, SetLiveOwner, SetMemory, SetOwner, SetVcpus, Shutdown,
                                  Start, Undefine)


@dataclass
class FakeDomain:
    uuid: str
    name: str
    config: ET.Element | None  # the persistent definition without <metadata>; None: transient
    config_owner: Owner | None
    live: ET.Element | None = None  # the running instance's definition, None when off
    live_owner: Owner | None = None
    power: Power = Power.shutoff
    autostart: bool = False
    obeys_acpi: bool = True  # a guest without an OS ignores the power button
    releases_devices: bool = True  # and never lets go of an unplugged device
    agent: bool = False  # a QEMU guest agent that answers while the guest runs

    @property
    def open_disks(self) -> frozenset[str]:
        """The disk files the running instance has open (none when off)."""
        if self.live is None:
            return frozenset()
        return frozenset(s.get("file", "") for s in self.live.findall("./devices/disk/source") if s.get("file"))


def _text(root: ET.Element, owner: Owner | None) -> str:
    """The definition as libvirt would print it: the owner element inside <metadata>."""
    el = copy.deepcopy(root)
    if owner is not None:
        meta = ET.Element("metadata")
        meta.append(owner_element(owner))
        uuid = el.find("uuid")
        el.insert(list(el).index(uuid) + 1 if uuid is not None else 1, meta)
    return ET.tostring(el, encoding="unicode")


def _split(xml: str) -> tuple[ET.Element, Owner | None]:
    root = ET.fromstring(xml)
    owner = parse_owner(root)
    for meta in root.findall("metadata"):
        root.remove(meta)
    return root, owner


class FakeHypervisor(FakeNetworkOps):
    def __init__(self, uri: str = "fake:///", *, virt_type: VirtType = VirtType.kvm) -> None:
        self.uri = uri
        self.virt_type = virt_type
        self.mutations: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self.known: set[str] | None = None
        self.hotplug = True  # False: a driver that cannot plug devices (as libvirt's test driver)
        self.events = EventSink()
        self.domains: dict[str, FakeDomain] = {}  # by UUID
        self.networks: dict[str, FakeNetwork] = {}
        self.libvirtd_up = True
        self.connected = False
        self.faults: dict[str, Exception] = {}  # operation -> the error its next call raises
        self._looked: dict[str, str] = {}  # name -> UUID of the last look (the cached handle)
        self._looked_nets: dict[str, str] = {}
        self._uuids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        # the disk images QEMU has open: their sizes (the simulation backs this with its
        # fake qemu-img's files, so that a live resize shows in `qemu-img info`)
        self.image_sizes: Any = {}  # path -> bytes: a dict, or the simulation's view of its files

    # ---- plumbing -------------------------------------------------------------------
    @property
    def mutation_count(self) -> int:
        return sum(self.mutations.values())

    def subscribe(self, sink: EventSink) -> None:
        self.events = sink

    def _call(self, op: str) -> None:
        self.calls += 1
        if not self.connected:
            raise ConnectionLost(f"not connected to {self.uri}", delay=1.0)
        fault = self.faults.pop(op, None)
        if fault is not None:
            raise fault

    def _emit(self, name: str, event: DomainEvent) -> None:
        if self.events.drop(name, event) or not self.connected or self._loop is None or self._loop.is_closed():
            return
        self.deliver_later(self._loop, self._deliver, name, event)

    def deliver_later(self, loop: asyncio.AbstractEventLoop, deliver: Any, name: str, event: DomainEvent) -> None:
        """How an event travels to the daemon: at once, after the call (a simulation makes it flaky)."""
        loop.call_soon(deliver, name, event)

    def _deliver(self, name: str, event: DomainEvent) -> None:
        if self.known is not None:
            (self.known.discard if event == DomainEvent.undefined else self.known.add)(name)
        self.events.domain(name, event)

    def _emit_net(self, name: str) -> None:
        if self.connected and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon(self.events.network, name)

    def _by_name(self, name: str) -> FakeDomain | None:
        return next((d for d in self.domains.values() if d.name == name), None)

    def _looked_at(self, name: str) -> FakeDomain | None:
        """The domain the last look saw, by UUID; raises when there was no look."""
        uuid = self._looked.get(name)
        if uuid is None:
            raise HypervisorError(f"domain {name!r} changed since it was looked at; looking again")
        return self.domains.get(uuid)

    async def connect(self, *, timeout: float = 15.0) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.libvirtd_up:
            raise ConnectionLost(f"Failed to connect socket to {self.uri}: Connection refused", delay=1.0)
        self.connected = True
        self._looked.clear()  # a new connection has no handles yet
        self._looked_nets.clear()
        self.known = None

    async def close(self, *, timeout: float = 2.0) -> None:
        self.connected = False
        self._looked.clear()
        self._looked_nets.clear()
        self.known = None

    def shutdown_pool(self) -> None:
        pass

    def drop_connection(self, reason: str = "end of file") -> None:
        """libvirtd went away (or was restarted): calls fail, events are lost, on_close fires."""
        if self.connected:
            self.connected = False
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon(self.events.closed, reason)

    # ---- reads ----------------------------------------------------------------------
    async def default_virt_type(self) -> VirtType:
        self._call("default_virt_type")
        return self.virt_type

    async def list_domains(self, *, look_at_each: bool = False) -> list[str]:
        # look_at_each is the real adapter's way to take its looks early: here each look is
        # the state itself, taken when it is asked for, which is what an early look must equal
        self._call("list_domains")
        names = sorted(d.name for d in self.domains.values())
        self.known = set(names)
        return names

    async def list_networks(self) -> list[str]:
        self._call("list_networks")
        return sorted(n.name for n in self.networks.values())

    async def observe_domain(self, name: str) -> ObservedDomain | None:
        self._call("observe_domain")
        cached = self.domains.get(self._looked.get(name, ""))
        dom = cached if cached is not None and cached.name == name else self._by_name(name)
        if dom is None:
            self._looked.pop(name, None)
            return None
        self._looked[name] = dom.uuid
        active = dom.power.active
        root, owner = (dom.config, dom.config_owner) if dom.config is not None else (dom.live, dom.live_owner)
        assert root is not None
        live_hash = None
        if owner is not None and active:
            live_hash = dom.live_owner.spec_hash if dom.live_owner is not None else ""
        nets = tuple(s.get("network", "") for s in root.findall("./devices/interface[@type='network']/source"))
        persistent = dom.config is not None
        return ObservedDomain(
            name=name, uuid=dom.uuid, power=dom.power, owner=owner, live_spec_hash=live_hash,
            fingerprint=fingerprint(_text(root, owner)), autostart=persistent and dom.autostart,
            persistent=persistent, networks=nets, live_owner=dom.live_owner if active else None)

    async def domains_using_network(self, network: str) -> list[str]:
        self._call("domains_using_network")
        return sorted(d.name for d in self.domains.values()
                      if any(s.get("network") == network
                             for s in (d.live if d.live is not None else d.config).findall("./devices/interface/source")))

    # ---- domain writes --------------------------------------------------------------
    async def settle(self) -> None:
        """Nothing to settle: the fake records a define's fingerprint at once, which is what
        every look at the real adapter sees too."""

    async def apply(self, name: str, ops: list[DomainOp]) -> None:
        for op in ops:
            self.mutations[op.counter] += 1
        for op in ops:
            self._call(op.counter)
            match op:
                case DefineDomain(xml=xml, owner=owner):
                    self._define_owned(xml, owner)
                case SetOwner(owner=owner):
                    self._persistent(name, "change the persistent config").config_owner = owner
                case SetAutostart(on=on):
                    self._persistent(name, "set autostart").autostart = bool(on)
                case Start(paused=paused):
                    self._start(name)
                    if paused:
                        self._looked_at(name).power = Power.paused  # type: ignore[union-attr]
                case MarkShutdown(owner=owner):
                    dom = self._looked_at(name)
                    if dom is not None and dom.power.active:
                        dom.live_owner = owner
                case Shutdown():
                    dom = self._looked_at(name)
                    if dom is not None and dom.power.active and dom.obeys_acpi:
                        self.power_off(dom)
                case Destroy():
                    dom = self._looked_at(name)
                    if dom is not None and dom.power.active:
                        self.power_off(dom)
                case Undefine():
                    self._undefine(name)
                case ResizeDisk(path=path, size=size):
                    self._grow_live(name, path, size)
                case SetVcpus(count=count):
                    live.set_vcpus(self._looked_at(name), name, count)
                case SetMemory(kib=kib):
                    live.set_memory(self._looked_at(name), name, kib)
                case AttachDevice(xml=xml, ident=ident):
                    live.attach(self._looked_at(name), name, xml, ident, hotplug=self.hotplug)
                case DetachDevice(ident=ident):
                    if live.detach(self._looked_at(name), name, ident, hotplug=self.hotplug):
                        self._emit(name, DomainEvent.device_removed)
                case SetLiveOwner(owner=owner):
                    dom = self._looked_at(name)
                    if dom is not None and dom.power.active:
                        dom.live_owner = owner
                case _:
                    raise TypeError(f"not a domain operation: {op!r}")

    async def live_disks(self, name: str) -> frozenset[str]:
        self._call("live_disks")
        dom = self._looked_at(name)
        return frozenset() if dom is None else dom.open_disks

    async def agent_answers(self, name: str) -> bool:
        self._call("agent_answers")
        dom = self._looked_at(name)
        return dom is not None and dom.power.active and dom.agent

    async def migrate(self, name: str, dest_uri: str, *, overlays: frozenset[str], settings: Any) -> None:
        """The fake is one host: a migration is refused as libvirt refuses one to an unknown URI
        (the fleet's moves are tested on two real libvirtds, tests/integration/test_fleet_moves.py)."""
        self._call("migrate")
        raise HypervisorError(f"live migration to {dest_uri} failed: the fake hypervisor has no other host")

    async def live_devices(self, name: str) -> frozenset[str]:
        self._call("live_devices")
        dom = self._looked_at(name)
        return live_idents(dom.live if dom is not None else None)

    def _grow_live(self, name: str, path: str, size: int) -> None:
        dom = self._looked_at(name)
        if dom is None or not dom.power.active or dom.live is None:
            raise HypervisorError(f"{name} is not running: {path} is grown offline instead")
        if path not in dom.open_disks:
            raise HypervisorError(f"invalid argument: disk '{path}' was not found in domain {name}")
        capacity = self.image_sizes[path]
        if size < capacity:
            raise HypervisorError(f"refusing to shrink {path} from {capacity} to {size} bytes")
        self.image_sizes[path] = size

    def define(self, xml: str) -> FakeDomain:
        """defineXML: a new persistent domain, or a new definition for an existing one."""
        root, owner = _split(xml)
        name, uuid = root.findtext("name") or "", root.findtext("uuid") or f"fake-{next(self._uuids)}"
        same_name, same_uuid = self._by_name(name), self.domains.get(uuid)
        if same_name is not None and same_name.uuid != uuid:
            raise HypervisorError(f"operation failed: domain '{name}' already exists with uuid {same_name.uuid}")
        if same_uuid is not None and same_uuid.name != name:
            raise HypervisorError(f"operation failed: domain '{same_uuid.name}' is already defined with uuid {uuid}")
        dom = same_uuid or FakeDomain(uuid=uuid, name=name, config=None, config_owner=None)
        dom.config, dom.config_owner = root, owner
        self.domains[uuid] = dom
        self._emit(name, DomainEvent.defined)
        return dom

    def _define_owned(self, xml: str, owner: Owner) -> None:
        dom = self.define(xml)
        self._looked[dom.name] = dom.uuid
        if self.known is not None:
            self.known.add(dom.name)
        assert dom.config is not None
        fp = fingerprint(_text(dom.config, dom.config_owner))
        dom.config_owner = dataclasses.replace(owner, fingerprint=fp)

    def _persistent(self, name: str, what: str) -> FakeDomain:
        """The domain looked at, for a change only a persistent one takes (libvirt's refusals)."""
        dom = self._looked_at(name)
        if dom is None:
            raise HypervisorError(f"Domain not found: no domain with matching name '{name}'")
        if dom.config is None:
            raise HypervisorError(f"Requested operation is not valid: cannot {what} of a transient domain")
        return dom

    def _start(self, name: str) -> None:
        dom = self._looked_at(name)
        if dom is None:
            raise HypervisorError(f"Domain not found: no domain with matching name '{name}'")
        if not dom.power.active:
            self.boot(dom)

    def boot(self, dom: FakeDomain) -> None:
        assert dom.config is not None
        dom.live, dom.live_owner = copy.deepcopy(dom.config), dom.config_owner
        dom.power = Power.running
        self._emit(dom.name, DomainEvent.started)

    def power_off(self, dom: FakeDomain) -> None:
        dom.power, dom.live, dom.live_owner = Power.shutoff, None, None
        self._emit(dom.name, DomainEvent.stopped)
        if dom.config is None:  # a transient domain is gone once it stops
            del self.domains[dom.uuid]

    def _undefine(self, name: str) -> None:
        dom = self._looked_at(name)
        if dom is None or dom.config is None:
            return
        if dom.power.active:
            dom.config, dom.config_owner, dom.autostart = None, None, False  # runs on, transient
        else:
            del self.domains[dom.uuid]
        self._looked.pop(name, None)  # as the real adapter drops its handle: the next change looks first
        self._emit(dom.name, DomainEvent.undefined)

    # ---- out of band: what someone does with virsh ------------------------------------
    def oob_define(self, xml: str) -> FakeDomain:
        return self.define(xml)

    def oob_destroy(self, name: str) -> None:
        dom = self._by_name(name)
        if dom is not None and dom.power.active:
            self.power_off(dom)

    def oob_start(self, name: str) -> None:
        dom = self._by_name(name)
        if dom is not None and not dom.power.active:
            self.boot(dom)

    def oob_undefine(self, name: str) -> None:
        dom = self._by_name(name)
        if dom is not None:
            if dom.power.active:
                self.power_off(dom)
            self.domains.pop(dom.uuid, None)
            self._emit(name, DomainEvent.undefined)
