"""Snapshots of nvirtd's domains: libvirt's internal snapshots, inside the qcow2 overlays.

Internal, not external: libvirt 9.0 cannot revert an external snapshot (that came in
9.9), and an external one would put a new file on top of the overlay, which is the VM's
data and which nvirtd's model (one overlay per disk, never rebased) depends on. An
internal snapshot lives inside the overlay itself: the chain overlay -> base stays as it
is, the definition does not change (no drift), the base stays rooted by the same
overlay, and `nvirtd purge` deletes it with the overlay. Of a running guest it is a full
system checkpoint (disks and memory, the guest paused for the moment it takes); of a
stopped one, the disks. Every writable disk must be qcow2 (libvirt says which is not).

Only domains of this nvirtd instance are touched; the CLI (snapshot_command.py) checks
the owner before it calls any of these.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from ..core.ownership import Owner, parse_owner
from ..core.xmlbuild import serialize
from ..errors import HypervisorError, PermanentError


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    name: str
    created: float  # wall clock, seconds
    state: str  # the domain's state when it was taken: running, shutoff, ...
    description: str
    current: bool


def open_owned(uri: str, name: str, instance: str) -> tuple[Any, Any, Owner]:
    """(connection, domain, its owner) of a domain this nvirtd instance owns; PermanentError
    when there is no such domain or it is not this instance's (the day-2 commands' gate)."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions, not on stderr
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        conn.close()
        raise PermanentError(f"libvirt at {uri} has no domain named {name}") from None
    owner = parse_owner(ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    if owner is None or owner.owned_by != instance:
        conn.close()
        whose = "not nvirtd's" if owner is None else f"nvirtd instance {owner.owned_by!r}'s"
        raise PermanentError(f"{name} is {whose}; only this instance's domains ({instance!r}) are touched")
    return conn, dom, owner


def _call(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"{what}: {exc.get_error_message() or exc}") from None


def create(dom: Any, name: str, description: str) -> SnapshotInfo:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "description").text = description
    # ATOMIC: all disks or none; an internal snapshot of a running guest includes its memory
    _call(f"snapshot {name} of {dom.name()}", dom.snapshotCreateXML, serialize(root),
          libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
    return next(s for s in list_all(dom) if s.name == name)


def list_all(dom: Any) -> list[SnapshotInfo]:
    infos = []
    for snap in _call(f"snapshots of {dom.name()}", dom.listAllSnapshots, 0):
        root = ET.fromstring(snap.getXMLDesc(0))
        infos.append(SnapshotInfo(
            name=snap.getName(), created=float(root.findtext("creationTime") or 0),
            state=root.findtext("state") or "", description=root.findtext("description") or "",
            current=snap.isCurrent() == 1))
    return sorted(infos, key=lambda s: (s.created, s.name))


def _lookup(dom: Any, name: str) -> Any:
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError:
        have = ", ".join(s.name for s in list_all(dom)) or "none"
        raise PermanentError(f"{dom.name()} has no snapshot {name!r} (it has: {have})") from None


def revert(dom: Any, name: str) -> None:
    snap = _lookup(dom, name)
    _call(f"revert {dom.name()} to {name}", dom.revertToSnapshot, snap, 0)


def delete(dom: Any, name: str) -> None:
    snap = _lookup(dom, name)
    _call(f"delete snapshot {name} of {dom.name()}", snap.delete, 0)


def stop_gracefully(dom: Any, timeout: float) -> bool:
    """ACPI power button, resent every 5 s; destroyed after `timeout`. True: it had to be destroyed."""
    try:
        return _stop(dom, timeout)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"stopping {dom.name()}: {exc.get_error_message()}") from None


def _stop(dom: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    sent = 0.0
    while dom.isActive() == 1 and time.monotonic() < deadline:
        if time.monotonic() - sent >= 5:
            try:
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            except libvirt.libvirtError:
                pass  # stopped meanwhile, or no ACPI: the deadline decides
            sent = time.monotonic()
        time.sleep(0.2)
    if dom.isActive() == 1:
        _call(f"destroy {dom.name()}", dom.destroy)
        return True
    return False


def is_running(dom: Any) -> bool:
    return bool(_call(f"the state of {dom.name()}", dom.isActive) == 1)
