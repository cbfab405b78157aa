"""Live migration of a running domain to another host of the fleet (libvirt's own).

Peer to peer: this host's libvirtd opens the destination's URI itself, and the two QEMUs
move memory and the disks between them. Only nvirtd's overlays travel
(NON_SHARED_INC copies the top of each chain; the base is at the same path on both
hosts, built or copied there first); any other disk is taken to be shared storage, never
copied over a device the destination has. The destination has the domain defined and
its empty overlays made beforehand (core/fleet_moves.py): libvirt does not make them
for an incremental copy. The call blocks for the whole migration, so it runs in a
thread of its own; past the timeout the job is aborted (or switched to post-copy), and
libvirt leaves the guest running here as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from ..errors import HypervisorError
from .hypervisor_protocol import MigrationSettings
from .hypervisor_threads import in_own_thread

ABORT_GRACE = 30.0  # after an abort, how long the migration call may take to give up


def migrate_flags(settings: MigrationSettings) -> int:
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
             | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_NON_SHARED_INC)
    if settings.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if settings.postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if settings.tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    if settings.paused:
        flags |= libvirt.VIR_MIGRATE_PAUSED
    return flags


def disk_targets(live_xml: str, files: frozenset[str]) -> list[str]:
    """The target names (vda, ...) of the running domain's disks whose source is one of `files`."""
    root = ET.fromstring(live_xml)
    return [t.get("dev", "") for d in root.findall("./devices/disk")
            if (s := d.find("source")) is not None and s.get("file") in files and (t := d.find("target")) is not None]


class Migrations:
    """Mixed into Hypervisor, which provides _run, _c, _count, _doms and _listing."""

    _run: Any
    _c: Any
    _count: Any
    _doms: dict[str, Any]
    _listing: Any

    async def migrate(self, name: str, dest_uri: str, *, overlays: frozenset[str],
                      settings: MigrationSettings) -> None:
        """Move the running domain `name` to the libvirt at `dest_uri`, its overlays with it."""
        self._count("migrate")
        dom = await self._run(lambda: self._c().lookupByName(name))
        targets = disk_targets(await self._run(dom.XMLDesc, 0), overlays)
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: targets} if targets else {}
        if settings.bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = settings.bandwidth
        flags = migrate_flags(settings)

        def move() -> None:
            dom.migrateToURI3(dest_uri, params, flags)
        call = asyncio.ensure_future(in_own_thread(move, timeout=None, name="libvirt-migrate"))
        try:
            await asyncio.wait_for(asyncio.shield(call), settings.timeout)
        except TimeoutError:
            await self._past_timeout(dom, call, settings)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"live migration to {dest_uri} failed: {exc.get_error_message() or exc}; "
                                  "the VM runs here as before") from None
        finally:
            self._doms.pop(name, None)
            self._listing.forget(name)

    async def _past_timeout(self, dom: Any, call: asyncio.Future[None], settings: MigrationSettings) -> None:
        if settings.postcopy:
            # the guest runs on the destination from now on and pulls what memory is left
            await self._run(dom.migrateStartPostCopy, 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(call), ABORT_GRACE)
                return
        else:
            with contextlib.suppress(libvirt.libvirtError):  # it may have ended meanwhile
                await self._run(dom.abortJob)
        with contextlib.suppress(TimeoutError, libvirt.libvirtError):
            await asyncio.wait_for(asyncio.shield(call), ABORT_GRACE)
        if call.done() and call.exception() is None:
            return  # finished just as the timeout came
        raise HypervisorError(f"the live migration did not finish within {settings.timeout:g} s "
                              f"({'switched to post-copy' if settings.postcopy else 'aborted'}); "
                              "libvirt leaves the VM running here as it was")
