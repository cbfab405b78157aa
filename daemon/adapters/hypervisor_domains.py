"""libvirt domains: the writing half of the Hypervisor adapter (see hypervisor.py).

Same rules: blocking calls run in the adapter's pool, libvirtError is translated
there, mutations are counted. `apply` takes typed operations (hypervisor_protocol)
and runs several of them for one domain in a single thread job (define, autostart and
start of a new domain cost one hop to the pool, not three).

A change is only ever made through the handle the pipeline's last look cached
(see hypervisor_handles.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from ..core.ownership import NAMESPACE, PREFIX, Owner, owner_xml
from . import hypervisor_live as live
from .hypervisor_fingerprints import read_fingerprint, record_owner
from .hypervisor_handles import through_cached
from ..errors import HotplugUnsupported, HypervisorError
from .hypervisor_protocol import (AttachDevice, DefineDomain, Destroy, DetachDevice, DomainOp, MarkShutdown,
                                  ResizeDisk, SetAutostart, SetLiveOwner, SetMemory, SetOwner, SetVcpus, Shutdown,
                                  Start, Undefine)

T = TypeVar("T")
_MARK_IS_OPTIONAL = (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG,
                     libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_OPERATION_UNSUPPORTED)
# a domain with snapshots: libvirt drops their metadata only; the snapshots themselves stay
# inside the overlay, which is kept (qemu-img snapshot -l lists them)
UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_TPM", 0)
                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def _with_flags_fallback(call: Callable[[int], Any], flags: int) -> Any:
    """call(flags), or call(0) on drivers that do not know the flags (the test driver)."""
    try:
        return call(flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return call(0)


def _unless_stopped(call: Callable[[], Any]) -> None:
    """Stopping a domain that stopped on its own meanwhile is not an error."""
    try:
        call()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise


def _grow_live(dom: Any, path: str, size: int) -> None:
    """blockResize would also shrink: the size the guest has now is read first."""
    if dom.isActive() != 1:
        raise HypervisorError(f"{dom.name()} is not running: {path} is grown offline instead")
    capacity = dom.blockInfo(path)[0]  # (capacity, allocation, physical); an unknown path raises
    if size < capacity:
        raise HypervisorError(f"refusing to shrink {path} from {capacity} to {size} bytes")
    if size > capacity:
        dom.blockResize(path, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)


class DomainOps:
    """Mixed into Hypervisor, which provides _run, _c, _count, _doms, known and the
    pending fingerprints (_fingerprints, _applying, _changes, _flush_when_idle)."""

    _run: Any
    _c: Any
    _count: Any
    _doms: dict[str, Any]
    _listing: Any
    known: set[str] | None
    _fingerprints: Any
    _applying: int
    _changes: int
    _flush_when_idle: Any
    hotplug: bool

    async def apply(self, name: str, ops: list[DomainOp]) -> None:
        self._listing.forget(name)  # a change of ours: what the listing and its looks saw no longer holds
        for op in ops:
            self._count(op.counter)
        self._applying += 1
        try:
            await self._run(self._apply, name, ops)
        finally:
            self._applying -= 1
            self._changes += 1
            if not self._applying and len(self._fingerprints):
                self._flush_when_idle()

    def _apply(self, name: str, ops: list[DomainOp]) -> None:
        self._fingerprints.settle(name)  # a change never overtakes the record of the define before it
        for op in ops:
            match op:
                case DefineDomain(xml=xml, owner=owner):
                    self._define(xml, owner)
                case SetOwner(owner=owner):
                    self._set_owner(name, owner)
                case SetAutostart(on=on):
                    if not self._fingerprints.add_autostart(name, on):  # just defined: set with its record
                        self._on_observed(name, lambda d: d.setAutostart(1 if on else 0))
                case Start(paused=paused):
                    self._start(name, paused)
                case MarkShutdown(owner=owner):
                    self._mark_shutdown(name, owner)
                case Shutdown():
                    self._on_observed(name, lambda d: _unless_stopped(lambda: _with_flags_fallback(
                        d.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)), gone_is_done=True)
                case Destroy():
                    self._on_observed(name, lambda d: _unless_stopped(lambda: _with_flags_fallback(
                        d.destroyFlags, libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)), gone_is_done=True)
                case Undefine():
                    # without KEEP_NVRAM (drivers that lack the flag) libvirt refuses to drop NVRAM, never deletes it
                    self._on_observed(name, lambda d: _with_flags_fallback(d.undefineFlags, UNDEFINE_FLAGS),
                                      gone_is_done=True)
                    self._doms.pop(name, None)
                case ResizeDisk(path=path, size=size):
                    self._on_observed(name, lambda d: _grow_live(d, path, size))
                case SetVcpus(count=count):
                    self._on_observed(name, lambda d: live.set_vcpus(d, count))
                case SetMemory(kib=kib):
                    self._on_observed(name, lambda d: live.set_memory(d, kib))
                case AttachDevice(xml=xml, ident=ident):
                    self._hotplug(name, lambda d: live.attach(d, xml, ident))
                case DetachDevice(ident=ident):
                    self._hotplug(name, lambda d: live.detach(d, ident))
                case SetLiveOwner(owner=owner):
                    self._on_observed(name, lambda d: live.set_live_owner(d, owner))
                case _:
                    raise TypeError(f"not a domain operation: {op!r}")

    def _hotplug(self, name: str, fn: Callable[[Any], None]) -> None:
        try:
            self._on_observed(name, fn)
        except HotplugUnsupported:
            self.hotplug = False  # learned once per connection: the plan waits for a boot instead
            raise

    def _on_observed(self, name: str, fn: Callable[[Any], T], *, gone_is_done: bool = False) -> T | None:
        return through_cached(self._doms, "domain", name, fn, gone_code=libvirt.VIR_ERR_NO_DOMAIN,
                              gone_is_done=gone_is_done)

    def _define(self, xml: str, owner: Owner) -> None:
        dom = self._c().defineXML(xml)
        self._doms[dom.name()] = dom
        if self.known is not None:
            self.known.add(dom.name())
        recorded = dataclasses.replace(owner, fingerprint=read_fingerprint(dom))
        self._fingerprints.add(dom.name(), dom, recorded)  # written after the starts (hypervisor_fingerprints)

    def _set_owner(self, name: str, owner: Owner) -> None:
        """The owner element of the persistent definition, with nothing else changed."""
        self._on_observed(name, lambda d: record_owner(d, owner))

    def _mark_shutdown(self, name: str, owner: Owner) -> None:
        """Record in the running instance's metadata when the graceful shutdown began; it
        goes with the instance (a new boot starts without it). A guest that stopped
        meanwhile has nothing left to mark."""
        def mark(d: Any) -> None:
            try:
                d.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, owner_xml(owner), PREFIX, NAMESPACE,
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as exc:
                # a driver without live metadata: the shutdown itself matters more than its clock
                if exc.get_error_code() not in _MARK_IS_OPTIONAL:
                    raise
        self._on_observed(name, mark, gone_is_done=True)

    def _start(self, name: str, paused: bool = False) -> None:
        def start(d: Any) -> None:
            try:
                d.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
            except libvirt.libvirtError:
                # started by someone else since we looked (virsh start, libvirt's autostart):
                # the error says "already running" (OPERATION_INVALID; INTERNAL_ERROR on the test driver)
                if d.isActive() != 1:
                    raise
        self._on_observed(name, start)
