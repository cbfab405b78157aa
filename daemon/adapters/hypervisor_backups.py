"""Backups of a VM's disks, self-contained, and their restore onto the VM's overlays.

A backup of a disk is flattened: one qcow2 file with everything the guest sees (base
and overlay), no backing file. So it restores on a host that never had the base, and
each backup stands alone (no chain to lose). A running VM is copied with libvirt's push
backup (virDomainBackupBegin: the point in time is the moment it begins, the guest runs
on meanwhile), after freezing its filesystems when a guest agent answers; a stopped one
with `qemu-img convert`, which holds the image's lock, so the VM cannot start mid-copy.

A restore writes the backup into a new file next to the overlay, thinned against the
overlay's current base when that is there (`qemu-img convert -B`: only what differs is
written), then swaps it in under the roots lock: the old overlay is kept under a dated
name first (a hard link), then the new one is renamed onto the overlay's name, so the
name never points at nothing and the old data is never deleted.
"""

from __future__ import annotations

import hashlib
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from ..core.xmlbuild import serialize
from ..errors import HypervisorError, PermanentError
from . import proc


@dataclass(frozen=True, slots=True)
class DiskSource:
    target: str  # vda, ...
    path: str
    format: str


def writable_disks(dom: Any) -> list[DiskSource]:
    """The disks a backup takes: file-backed, read-write, not CD-ROMs."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    found = []
    for disk in root.findall("./devices/disk"):
        source, target, driver = disk.find("source"), disk.find("target"), disk.find("driver")
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None or source is None:
            continue
        path = source.get("file") or source.get("dev")
        if path and target is not None:
            found.append(DiskSource(target.get("dev", ""), path, driver.get("type", "raw") if driver is not None
                                    else "raw"))
    return found


def look(dom: Any) -> tuple[list[DiskSource], bool, str]:
    """(the disks a backup takes, whether it runs, its UUID), libvirt's errors translated."""
    try:
        return writable_disks(dom), dom.isActive() == 1, dom.UUIDString()
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"cannot look at {dom.name()}: {exc.get_error_message()}") from None


def freeze(dom: Any) -> bool:
    """Freeze the guest's filesystems through its agent; False: no agent answered."""
    try:
        dom.fsFreeze()
        return True
    except libvirt.libvirtError:
        return False


def thaw(dom: Any) -> None:
    try:
        dom.fsThaw()
    except libvirt.libvirtError:
        pass  # the agent thaws by itself after its timeout


def push_backup(dom: Any, targets: dict[str, str], *, before_begin: Callable[[], None] = lambda: None,
                after_begin: Callable[[], None] = lambda: None,
                progress: Callable[[int, int], None] = lambda done, total: None) -> None:
    """A full push backup of the disks in `targets` (dev -> new file), waited for."""
    root = ET.Element("domainbackup", mode="push")
    disks = ET.SubElement(root, "disks")
    for disk in writable_disks(dom):
        if disk.target in targets:
            el = ET.SubElement(disks, "disk", name=disk.target, backup="yes", type="file")
            ET.SubElement(el, "driver", type="qcow2")
            ET.SubElement(el, "target", file=targets[disk.target])
        else:
            ET.SubElement(disks, "disk", name=disk.target, backup="no")
    before_begin()
    try:
        dom.backupBegin(serialize(root), None, 0)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"libvirt refused the backup of {dom.name()}: {exc.get_error_message()}") from None
    finally:
        after_begin()
    try:
        while True:
            info = dom.jobInfo()  # [type, elapsed ms, remaining, data total, processed, remaining, ...]
            if info[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                break
            progress(int(info[4]), int(info[3]))
            time.sleep(0.25)
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError as exc:  # the guest stopped, or libvirtd went away, mid-backup
        raise HypervisorError(f"the backup of {dom.name()} was interrupted: {exc.get_error_message()}") from None
    if not stats.get("success", stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED):
        raise HypervisorError(f"the backup of {dom.name()} failed: {stats.get('errmsg', 'libvirt gave no reason')}")
    total = int(stats.get("disk_total", 0))
    progress(total, total)


async def copy_flat(source: str, fmt: str, target: str) -> None:
    """A stopped disk, flattened into a standalone qcow2 (the lock keeps QEMU off it meanwhile)."""
    await proc.run(["qemu-img", "convert", "-f", fmt, "-O", "qcow2", source, target])


async def restore_into(backup: str, target: str, *, fmt: str, backing: str | None, backing_format: str | None) -> None:
    """The backup written as a new image: thin on `backing` when given, else standalone."""
    argv = ["qemu-img", "convert", "-f", "qcow2", "-O", fmt]
    if backing is not None and fmt == "qcow2":
        argv += ["-B", backing, "-F", backing_format or "qcow2"]
    await proc.run([*argv, backup, target])


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_writable(folder: str) -> None:
    """Fail before anything is copied when the backup cannot be written there."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".nvirtd-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise PermanentError(f"cannot write backups to {folder}: {exc.strerror or exc}") from None
