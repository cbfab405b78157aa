"""libvirt, behind one small async interface. Only hypervisor*.py import libvirt:
this module connects, reads and listens; hypervisor_domains and hypervisor_networks
(mixins) hold the writes.

- No call blocks the loop: reads and writes run in this adapter's thread pool;
  connect and close, which can hang on a hung libvirtd, run in threads of their
  own and are given up after a timeout.
- libvirtError is translated here: NO_DOMAIN/NO_NETWORK become None on lookups,
  a dead connection becomes ConnectionLost, the rest HypervisorError with libvirt's
  message. Nothing above this module catches libvirtError.
- Mutating calls are counted per kind (`mutations`), so tests and the benchmark can
  prove that an unchanged config costs zero of them.
- libvirt's own event loop runs in one dedicated thread, started once per process
  before the first connection; event callbacks hop to the asyncio loop with
  call_soon_threadsafe. (libvirtaio, which runs libvirt's I/O on the asyncio loop,
  was measured and dropped: every RPC reply then passes through the one Python
  loop thread, and 8 worker threads got no faster than 1; see docs/design.md.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from ..core.observed import DomainEvent, ObservedDomain, Power
from ..core.ownership import NAMESPACE
from ..core.spec import VirtType
from ..errors import ConnectionLost, HypervisorError
from .hypervisor_domains import DomainOps
from .hypervisor_fingerprints import PendingFingerprints
from .hypervisor_listing import Listing, Listings, Reading, interpret
from .hypervisor_live import LiveReads
from .hypervisor_migrate import Migrations
from .hypervisor_networks import NetworkOps
from .hypervisor_threads import close_quietly, in_own_thread, register_event_loop
from .hypervisor_protocol import EventSink

T = TypeVar("T")
FLUSH_AFTER_IDLE = 0.02  # seconds without a change in flight before pending fingerprints are written
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
    libvirt.VIR_DOMAIN_EVENT_DEFINED: DomainEvent.defined, libvirt.VIR_DOMAIN_EVENT_UNDEFINED: DomainEvent.undefined,
    libvirt.VIR_DOMAIN_EVENT_STARTED: DomainEvent.started, libvirt.VIR_DOMAIN_EVENT_SUSPENDED: DomainEvent.suspended,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: DomainEvent.resumed, libvirt.VIR_DOMAIN_EVENT_STOPPED: DomainEvent.stopped,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: DomainEvent.shutdown,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: DomainEvent.pmsuspended, libvirt.VIR_DOMAIN_EVENT_CRASHED: DomainEvent.crashed,
}

def _no_object(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK)


_MIGRATING = (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY)


class Hypervisor(Listings, DomainOps, NetworkOps, LiveReads, Migrations):
    def __init__(self, uri: str, *, threads: int = 8, connections: int = 4) -> None:
        self.uri = uri
        self.conn: libvirt.virConnect | None = None  # the one with the event callbacks
        # libvirtd serves at most 5 requests of one client connection at once
        # (max_client_requests): calls are spread over a few connections
        self.connections = connections
        self._pool_conns: list[libvirt.virConnect] = []
        self._next = 0
        self.mutations: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="libvirt")
        self._callback_ids: list[tuple[str, int]] = []
        self.events = EventSink()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._doms: dict[str, Any] = {}  # name -> virDomain: saves a lookup RPC per call
        self._nets: dict[str, Any] = {}  # name -> virNetwork of the last look (see hypervisor_handles)
        # every domain name libvirt has, from the last full listing plus the events since:
        # a name not in it needs no lookup RPC to learn that it does not exist
        self.known: set[str] | None = None
        self.hotplug = True  # until the driver refuses to plug a device (learned per connection)
        self._listing = Listing()  # facts and early looks of the last listing (hypervisor_listing)
        self._threads = threads
        self._fingerprints = PendingFingerprints()  # see hypervisor_fingerprints
        self._applying = 0  # apply() calls in flight
        self._changes = 0  # apply() calls ended, ever: an idle moment is one with no new one
        self._flush_task: asyncio.Task[None] | None = None

    # ---- plumbing -------------------------------------------------------------------
    def subscribe(self, sink: EventSink) -> None:
        self.events = sink

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

    async def connect(self, *, timeout: float = 15.0) -> None:
        """Open the connections and register the event callbacks, all off the loop.

        libvirt.open() to a libvirtd that is hung (SIGSTOP, overloaded) blocks without a
        timeout: it runs in a daemon thread of its own, given up after `timeout` (the
        thread then closes whatever it gets), so a hung libvirtd never holds the pool
        or the process."""
        register_event_loop()
        self._loop = asyncio.get_running_loop()
        try:
            conns = await in_own_thread(self._open_all, timeout=timeout, cleanup=close_quietly)
        except TimeoutError:
            raise ConnectionLost(f"libvirt at {self.uri} did not answer within {timeout:g}s", delay=1.0) from None
        except libvirt.libvirtError as exc:
            raise ConnectionLost(exc.get_error_message() or str(exc), delay=1.0) from None
        self.conn, self._pool_conns = conns[0], conns

    def _open_all(self) -> list[Any]:
        conn = libvirt.open(self.uri)
        try:
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(self._closed, None)  # test:/// cannot close under us
            if "://" in self.uri and not self.uri.startswith("test:///"):
                with contextlib.suppress(libvirt.libvirtError):
                    conn.setKeepAlive(5, 3)
            self._callback_ids = [
                ("domain", conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                       self._domain_event, None)),
                ("network", conn.networkEventRegisterAny(None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE,
                                                         self._network_event, None)),
            ]
            with contextlib.suppress(libvirt.libvirtError):  # a guest released an unplugged device
                self._callback_ids.append(("domain", conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._device_removed, None)))
            conns = [conn]
            if not self.uri.startswith("test:///"):  # in-process test:///FILE would give each its own state
                for _ in range(self.connections - 1):
                    extra = libvirt.open(self.uri)
                    with contextlib.suppress(libvirt.libvirtError):
                        extra.registerCloseCallback(self._closed, None)
                        extra.setKeepAlive(5, 3)
                    conns.append(extra)
            return conns
        except BaseException:
            close_quietly([conn])
            raise

    async def close(self, *, timeout: float = 2.0) -> None:
        """Drop the connections. Deregistering talks to libvirtd, which may be hung: it runs
        in its own thread and is given up after `timeout` (the process may be exiting)."""
        conns, self.conn, self._pool_conns = self._pool_conns, None, []
        callbacks, self._callback_ids = self._callback_ids, []
        self._doms.clear()
        self._nets.clear()
        self._listing.begin()  # nothing of the old connection's listing is used
        self._fingerprints.clear()  # the resync after a reconnect redefines what had none
        self.known = None  # events may be missed while disconnected: list again
        self.hotplug = True
        if not conns:
            return

        def close_all() -> None:
            first = conns[0]
            for kind, cid in callbacks:
                with contextlib.suppress(libvirt.libvirtError):
                    (first.domainEventDeregisterAny if kind == "domain" else first.networkEventDeregisterAny)(cid)
            close_quietly(conns)
        with contextlib.suppress(TimeoutError):
            await in_own_thread(close_all, timeout=timeout)

    # ---- fingerprints recorded after the starts (hypervisor_fingerprints) -----------
    def _flush_when_idle(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(FLUSH_AFTER_IDLE, self._flush_if_idle, self._changes)

    def _flush_if_idle(self, changes_then: int) -> None:
        busy = self._flush_task is not None and not self._flush_task.done()
        if not busy and not self._applying and self._changes == changes_then and len(self._fingerprints):
            self._flush_task = asyncio.get_running_loop().create_task(self._flush(yield_to_changes=True))

    async def settle(self) -> None:
        """Write every pending fingerprint (before READY=1, and before closing)."""
        if self._flush_task is not None and not self._flush_task.done():
            await asyncio.shield(self._flush_task)  # not the same records twice (each a wait in a thread)
        await self._flush(yield_to_changes=False)

    async def _flush(self, *, yield_to_changes: bool) -> None:
        names = self._fingerprints.names()
        for i in range(0, len(names), self._threads):
            if yield_to_changes and self._applying:
                return  # changes first; the end of the last one in flight flushes again
            try:
                await asyncio.gather(*(self._run(self._fingerprints.settle_quietly, n)
                                       for n in names[i:i + self._threads]))
            except (ConnectionLost, HypervisorError):
                return  # what stays pending is written, or its error reported, by the next look

    def shutdown_pool(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # the callbacks run in libvirt's event thread: hand over to the asyncio loop
    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        why = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}.get(reason, str(reason))
        self._to_loop(self.events.closed, why)

    def _domain_event(self, _conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        kind = DOMAIN_EVENTS.get(event, DomainEvent.other)  # one nvirtd does not know: still a change
        name = dom.name()
        self._listing.forget(name)  # what the listing said of it, or an early look saw, may no longer hold
        if self.events.drop(name, kind):  # expected (our own action's echo): no need to wake the loop
            return
        self._to_loop(self._note_domain_event, name, kind)

    def _device_removed(self, _conn: Any, dom: Any, _alias: str, _opaque: Any) -> None:
        self._listing.forget(dom.name())
        self._to_loop(self._note_domain_event, dom.name(), DomainEvent.device_removed)

    def _note_domain_event(self, name: str, event: DomainEvent) -> None:
        if self.known is not None:
            if event == DomainEvent.undefined:
                self.known.discard(name)
            else:
                self.known.add(name)
        self.events.domain(name, event)

    def _network_event(self, _conn: Any, net: Any, _event: int, _detail: int, _opaque: Any) -> None:
        self._to_loop(self.events.network, net.name())

    def _c(self) -> libvirt.virConnect:
        if self.conn is None or not self._pool_conns:
            raise ConnectionLost(f"not connected to {self.uri}", delay=1.0)
        self._next = (self._next + 1) % len(self._pool_conns)
        return self._pool_conns[self._next]

    def _on_dom(self, name: str, fn: Callable[[Any], T]) -> T:
        """For a look: fn(domain handle), looked up once and cached; a stale handle (the
        name now belongs to another UUID) is dropped and looked up again. Changes use
        _on_observed, which never looks a name up again."""
        dom = self._doms.get(name)
        if dom is not None:
            try:
                return fn(dom)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                self._doms.pop(name, None)
        dom = self._c().lookupByName(name)
        self._doms[name] = dom
        return fn(dom)

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

    async def list_networks(self) -> list[str]:
        return await self._run(lambda: [n.name() for n in self._c().listAllNetworks()])

    async def observe_domain(self, name: str) -> ObservedDomain | None:
        if self.known is not None and name not in self.known and name not in self._doms:
            return None
        early = self._listing.take_look(name)
        if early is not None:
            return interpret(early)  # the listing's reads (hypervisor_listing): parsed here, no hop
        return await self._run(self._observe_domain, name)

    def _observe_domain(self, name: str) -> ObservedDomain | None:
        reading = self._read_domain(name)
        return interpret(reading) if reading is not None else None

    def _read_domain(self, name: str) -> Reading | None:
        self._fingerprints.settle(name)  # never a look at a domain of ours without its fingerprint
        try:
            return self._on_dom(name, self._read_handle)
        except libvirt.libvirtError as exc:
            if _no_object(exc):
                self._doms.pop(name, None)
                return None
            raise

    def _read_handle(self, dom: Any) -> Reading:
        """One consistent look; a domain that stops between two of its reads (libvirt
        then refuses the live-only read as "not running") is looked at again."""
        for _ in range(2):
            try:
                return self._read(dom)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise
        return self._read(dom)

    def _read(self, dom: Any) -> Reading:
        """The RPCs of a look, nothing parsed (see interpret)."""
        name = dom.name()
        listed = self._listing.facts_of(name)
        if listed is not None:
            power, persistent, autostart = listed
        else:
            state, reason = dom.state()
            power = _POWER.get(state, Power.other)
            if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_STARTING_UP:
                power = Power.starting
            elif state == libvirt.VIR_DOMAIN_PAUSED and reason in _MIGRATING:
                power = Power.migrating
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        live = None
        if power.active and NAMESPACE in xml:  # an owner element may be in it: the running instance's too
            try:
                live = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    raise
                live = ""  # running with a definition that was not ours
        if listed is None:
            # a transient domain vanishes when it stops: only an active one can be transient
            persistent = not power.active or dom.isPersistent() == 1
            autostart = persistent and dom.autostart() == 1
        return Reading(name, power, persistent, autostart, xml, live)

    async def domains_using_network(self, network: str) -> list[str]:
        def scan() -> list[str]:
            users = []
            for dom in self._c().listAllDomains():
                root = ET.fromstring(dom.XMLDesc(0))
                if any(s.get("network") == network for s in root.findall("./devices/interface/source")):
                    users.append(dom.name())
            return users
        return await self._run(scan)
