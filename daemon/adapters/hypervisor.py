"""libvirt, behind one small async interface. The only module that imports libvirt.

- Every call that can block runs in this adapter's thread pool, never on the loop.
- libvirtError is translated here: NO_DOMAIN/NO_NETWORK become None on lookups,
  a dead connection becomes ConnectionLost, the rest HypervisorError with libvirt's
  message. Nothing above this module catches libvirtError.
- Mutating calls are counted per kind (`mutations`), so tests and the benchmark can
  prove that an unchanged config costs zero of them.
- libvirtaio is registered once per process, before the first connection, so that
  lifecycle events arrive on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt
import libvirtaio

from ..core.observed import ObservedDomain, ObservedNetwork, Power
from ..core.ownership import NAMESPACE, PREFIX, Owner, fingerprint, owner_xml, parse_owner, parse_owner_element
from ..core.spec import VirtType
from ..errors import ConnectionLost, TemporaryError

T = TypeVar("T")
_POWER = {
    libvirt.VIR_DOMAIN_RUNNING: Power.running,
    libvirt.VIR_DOMAIN_BLOCKED: Power.running,
    libvirt.VIR_DOMAIN_PAUSED: Power.paused,
    libvirt.VIR_DOMAIN_SHUTDOWN: Power.shutting_down,
    libvirt.VIR_DOMAIN_SHUTOFF: Power.shutoff,
    libvirt.VIR_DOMAIN_CRASHED: Power.crashed,
    libvirt.VIR_DOMAIN_PMSUSPENDED: Power.pmsuspended,
}
DOMAIN_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed", libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
MUTATING = frozenset({
    "define_domain", "set_autostart", "start", "shutdown", "destroy", "undefine",
    "define_network", "set_network_autostart", "start_network", "destroy_network", "undefine_network",
    "reattach_nics",
})
UNDEFINE_FLAGS = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_TPM", 0)

_aio_lock = threading.Lock()
_aio_loop: asyncio.AbstractEventLoop | None = None


def _with_flags_fallback(call: Callable[[int], Any], flags: int) -> Any:
    """call(flags), or call(0) on drivers that do not know the flags (the test driver)."""
    try:
        return call(flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return call(0)


def _network_inactive_xml(net: Any) -> str:
    """The persistent definition; the test driver has no INACTIVE flag for networks."""
    try:
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return net.XMLDesc(0)


class HypervisorError(TemporaryError):
    """libvirt refused or failed an operation; retried with backoff."""


def register_event_loop() -> None:
    """Route libvirt's events through the running asyncio loop (once per process)."""
    global _aio_loop
    with _aio_lock:
        if _aio_loop is None:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions
            _aio_loop = asyncio.get_running_loop()
            libvirtaio.virEventRegisterAsyncIOImpl(loop=_aio_loop)


def _no_object(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK)


class Hypervisor:
    def __init__(self, uri: str, *, threads: int = 8) -> None:
        self.uri = uri
        self.conn: libvirt.virConnect | None = None
        self.mutations: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="libvirt")
        self._callback_ids: list[tuple[str, int]] = []
        self.on_domain_event: Callable[[str, str], None] = lambda name, event: None
        self.on_network_event: Callable[[str], None] = lambda name: None
        self.on_close: Callable[[str], None] = lambda reason: None

    # ---- plumbing -------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self.calls += 1
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args))
        except libvirt.libvirtError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: libvirt.libvirtError) -> Exception:
        conn = self.conn
        alive = False
        try:
            alive = conn is not None and conn.isAlive() == 1
        except libvirt.libvirtError:
            pass
        msg = exc.get_error_message() or str(exc)
        if not alive or exc.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN):
            return ConnectionLost(f"lost the connection to {self.uri}: {msg}", delay=1.0)
        return HypervisorError(msg)

    def _count(self, kind: str) -> None:
        self.mutations[kind] += 1

    @property
    def mutation_count(self) -> int:
        return sum(self.mutations.values())

    async def connect(self) -> None:
        register_event_loop()
        self.conn = await self._run(libvirt.open, self.uri)
        conn = self.conn
        try:
            conn.registerCloseCallback(self._closed, None)
        except libvirt.libvirtError:
            pass  # drivers without a remote connection (test:///) cannot close under us
        if "://" in self.uri and not self.uri.startswith("test:///"):
            try:
                conn.setKeepAlive(5, 3)
            except libvirt.libvirtError:
                pass
        self._callback_ids = [
            ("domain", conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._domain_event, None)),
            ("network", conn.networkEventRegisterAny(None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, self._network_event, None)),
        ]

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        for kind, cid in self._callback_ids:
            try:
                (conn.domainEventDeregisterAny if kind == "domain" else conn.networkEventDeregisterAny)(cid)
            except libvirt.libvirtError:
                pass
        self._callback_ids = []
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        except libvirt.libvirtError:
            pass

    def shutdown_pool(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self.on_close({0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}.get(reason, str(reason)))

    def _domain_event(self, _conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        self.on_domain_event(dom.name(), DOMAIN_EVENTS.get(event, str(event)))

    def _network_event(self, _conn: Any, net: Any, _event: int, _detail: int, _opaque: Any) -> None:
        self.on_network_event(net.name())

    def _c(self) -> libvirt.virConnect:
        if self.conn is None:
            raise ConnectionLost(f"not connected to {self.uri}", delay=1.0)
        return self.conn

    # ---- reads ----------------------------------------------------------------------
    async def default_virt_type(self) -> VirtType:
        caps = await self._run(lambda: self._c().getCapabilities())
        root = ET.fromstring(caps)
        for guest in root.findall("guest"):
            arch = guest.find("arch")
            if arch is not None and arch.get("name") == "x86_64":
                if any(d.get("type") == "kvm" for d in arch.findall("domain")):
                    return VirtType.kvm
        return VirtType.qemu

    async def list_domains(self) -> list[str]:
        return await self._run(lambda: [d.name() for d in self._c().listAllDomains()])

    async def list_networks(self) -> list[str]:
        return await self._run(lambda: [n.name() for n in self._c().listAllNetworks()])

    async def observe_domain(self, name: str) -> ObservedDomain | None:
        return await self._run(self._observe_domain, name)

    def _observe_domain(self, name: str) -> ObservedDomain | None:
        try:
            dom = self._c().lookupByName(name)
            state = dom.state()[0]
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            power = _POWER.get(state, Power.other)
            owner = parse_owner(xml)
            live_hash = None
            if owner is not None and power.active:
                try:
                    live = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    live_owner = parse_owner_element(live)
                    live_hash = live_owner.spec_hash if live_owner else ""
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                        raise
                    live_hash = ""  # running with a definition that was not ours
            persistent = dom.isPersistent() == 1
            autostart = persistent and dom.autostart() == 1
        except libvirt.libvirtError as exc:
            if _no_object(exc):
                return None
            raise
        root = ET.fromstring(xml)
        nets = tuple(s.get("network", "") for s in root.findall("./devices/interface[@type='network']/source"))
        return ObservedDomain(
            name=name, uuid=root.findtext("uuid") or "", power=power, owner=owner, live_spec_hash=live_hash,
            fingerprint=fingerprint(xml), autostart=autostart, persistent=persistent, networks=nets,
        )

    async def observe_network(self, name: str) -> ObservedNetwork | None:
        return await self._run(self._observe_network, name)

    def _observe_network(self, name: str) -> ObservedNetwork | None:
        try:
            net = self._c().networkLookupByName(name)
            active = net.isActive() == 1
            xml = _network_inactive_xml(net)
            owner = parse_owner(xml)
            live_hash = None
            if active and owner is not None:
                live_owner = parse_owner(net.XMLDesc(0))
                live_hash = live_owner.spec_hash if live_owner else ""
            persistent = net.isPersistent() == 1
            autostart = persistent and net.autostart() == 1
        except libvirt.libvirtError as exc:
            if _no_object(exc):
                return None
            raise
        return ObservedNetwork(
            name=name, uuid=ET.fromstring(xml).findtext("uuid") or "", active=active, owner=owner,
            live_spec_hash=live_hash, fingerprint=fingerprint(xml), autostart=autostart, persistent=persistent,
        )

    async def domains_using_network(self, network: str) -> list[str]:
        def scan() -> list[str]:
            users = []
            for dom in self._c().listAllDomains():
                root = ET.fromstring(dom.XMLDesc(0))
                if any(s.get("network") == network for s in root.findall("./devices/interface/source")):
                    users.append(dom.name())
            return users
        return await self._run(scan)

    # ---- domain writes --------------------------------------------------------------
    async def define_domain(self, xml: str, owner: Owner) -> str:
        """Define, read libvirt's version back, and record its fingerprint in our metadata."""
        self._count("define_domain")

        def define() -> str:
            dom = self._c().defineXML(xml)
            fp = fingerprint(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            recorded = Owner(file=owner.file, spec_hash=owner.spec_hash, fingerprint=fp)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, owner_xml(recorded), PREFIX, NAMESPACE,
                            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            return fp
        return await self._run(define)

    async def set_autostart(self, name: str, on: bool) -> None:
        self._count("set_autostart")
        await self._run(lambda: self._c().lookupByName(name).setAutostart(1 if on else 0))

    async def start(self, name: str) -> None:
        self._count("start")
        await self._run(lambda: self._c().lookupByName(name).create())

    async def shutdown(self, name: str) -> None:
        """ACPI power button (the guest decides); re-sent by the reconciler until the timeout."""
        self._count("shutdown")
        await self._run(lambda: _with_flags_fallback(
            self._c().lookupByName(name).shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN))

    async def destroy(self, name: str) -> None:
        self._count("destroy")
        await self._run(lambda: _with_flags_fallback(
            self._c().lookupByName(name).destroyFlags, libvirt.VIR_DOMAIN_DESTROY_GRACEFUL))

    async def undefine(self, name: str) -> None:
        """Undefine, keeping NVRAM and TPM state; disks are never touched by libvirt here."""
        self._count("undefine")
        # without KEEP_NVRAM (drivers that lack the flag) libvirt refuses to drop NVRAM, never deletes it
        await self._run(lambda: _with_flags_fallback(self._c().lookupByName(name).undefineFlags, UNDEFINE_FLAGS))

    # ---- network writes -------------------------------------------------------------
    async def define_network(self, xml: str) -> str:
        """Define and return the fingerprint; the owner element goes in with the XML itself.

        libvirt 9.0 has no virNetworkSetMetadata, so the fingerprint is recorded by
        defining a second time with it (libvirt's expansion is stable).
        """
        self._count("define_network")

        def define() -> str:
            conn = self._c()
            net = conn.networkDefineXML(xml)
            inactive = _network_inactive_xml(net)
            fp = fingerprint(inactive)
            root = ET.fromstring(inactive)
            owner = root.find(f"metadata/{{{NAMESPACE}}}owner")
            if owner is not None:
                owner.set("fingerprint", fp)
                conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
            return fp
        return await self._run(define)

    async def set_network_autostart(self, name: str, on: bool) -> None:
        self._count("set_network_autostart")
        await self._run(lambda: self._c().networkLookupByName(name).setAutostart(1 if on else 0))

    async def start_network(self, name: str) -> None:
        self._count("start_network")
        await self._run(lambda: self._c().networkLookupByName(name).create())

    async def destroy_network(self, name: str) -> None:
        self._count("destroy_network")
        await self._run(lambda: self._c().networkLookupByName(name).destroy())

    async def undefine_network(self, name: str) -> None:
        self._count("undefine_network")
        await self._run(lambda: self._c().networkLookupByName(name).undefine())

    async def reattach_nics(self, network: str) -> list[str]:
        """Plug the running guests' NICs on `network` back in after it was restarted.

        Detach + attach of the live device with the same MAC: the guest sees a link
        flap and keeps its address (static leases follow the MAC).
        """
        self._count("reattach_nics")

        def reattach() -> list[str]:
            done = []
            for dom in self._c().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                root = ET.fromstring(dom.XMLDesc(0))
                for iface in root.findall("./devices/interface[@type='network']"):
                    source = iface.find("source")
                    if source is None or source.get("network") != network:
                        continue
                    for drop in ("target", "alias", "address"):
                        for el in iface.findall(drop):
                            iface.remove(el)
                    device = ET.tostring(iface, encoding="unicode")
                    try:
                        dom.detachDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    except libvirt.libvirtError:
                        pass  # already gone with the old bridge
                    dom.attachDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    done.append(dom.name())
            return done
        return await self._run(reattach)
