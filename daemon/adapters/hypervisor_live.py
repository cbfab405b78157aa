"""Live changes of a running guest, on libvirt (see core/live_changes.py for the plan).

Every call is live only (VIR_DOMAIN_AFFECT_LIVE): the definition was already written by
the define before it, so the next boot has the change either way. Each is idempotent,
because a pass may fail half-way and be run again: a device that is already there is
not plugged twice, one that is gone is not unplugged again.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import libvirt
import libvirt_qemu

from ..core.live_changes import live_idents
from ..core.ownership import NAMESPACE, PREFIX, Owner, owner_xml
from ..errors import HotplugUnsupported

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
AGENT_TIMEOUT = 2  # seconds a guest-ping may take


def read_live_idents(dom: Any) -> frozenset[str]:
    return live_idents(ET.fromstring(dom.XMLDesc(0)))


class LiveReads:
    """Mixed into Hypervisor: what the running instance has now, read when a plan needs it."""

    _run: Any
    _on_observed: Any

    async def live_disks(self, name: str) -> frozenset[str]:
        """The disk files the running instance of the domain looked at last has open."""
        def read(dom: Any) -> frozenset[str]:
            root = ET.fromstring(dom.XMLDesc(0))
            return frozenset(s.get("file", "") for s in root.findall("./devices/disk/source") if s.get("file"))
        return await self._run(lambda: self._on_observed(name, read) or frozenset())

    async def agent_answers(self, name: str) -> bool:
        """Whether the running guest's QEMU guest agent answers guest-ping within 2 s. No agent,
        a driver without one (the test driver), or a guest that stopped: False."""
        def ping(dom: Any) -> bool:
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-ping"}', AGENT_TIMEOUT, 0)
                return True
            except libvirt.libvirtError:
                return False
        return bool(await self._run(lambda: self._on_observed(name, ping)))

    async def live_devices(self, name: str) -> frozenset[str]:
        """The NIC MACs and disk aliases the running instance has (a pending unplug is done
        once its device is gone from them)."""
        return await self._run(lambda: self._on_observed(name, read_live_idents) or frozenset())


def set_vcpus(dom: Any, count: int) -> None:
    dom.setVcpusFlags(count, LIVE)


def set_memory(dom: Any, kib: int) -> None:
    dom.setMemoryFlags(kib, LIVE)


def attach(dom: Any, xml: str, ident: str) -> None:
    if ident in read_live_idents(dom):
        return
    with _hotplug("plugged"):
        dom.attachDeviceFlags(xml, LIVE)


def detach(dom: Any, ident: str) -> None:
    """Ask the guest to release the device shown by `ident`. libvirt returns once it has
    asked; QEMU removes the device when the guest lets go (the device-removed event)."""
    root = ET.fromstring(dom.XMLDesc(0))
    el = next((i for i in root.findall("./devices/interface")
               if (i.find("mac") is not None and i.find("mac").get("address", "").lower() == ident)), None)
    alias = el.find("alias").get("name") if el is not None and el.find("alias") is not None else None
    if el is None and ident in {a.get("name") for a in root.findall("./devices/disk/alias")}:
        alias = ident
    if alias is None and el is None:
        return  # gone already
    with _hotplug("unplugged"):
        if alias is not None:
            dom.detachDeviceAlias(alias, LIVE)
        else:
            dom.detachDeviceFlags(ET.tostring(el, encoding="unicode"), LIVE)


@contextlib.contextmanager
def _hotplug(what: str) -> Iterator[None]:
    """A driver that cannot plug devices says so once (the plan waits for a boot then)."""
    try:
        yield
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            raise HotplugUnsupported(f"{exc.get_error_message()}: devices are {what} at the next boot",
                                     delay=1.0) from None
        raise


def set_live_owner(dom: Any, owner: Owner) -> None:
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, owner_xml(owner), PREFIX, NAMESPACE, LIVE)
