"""Other hosts of a fleet, read only: which of an instance's domains each one holds.

A fleet's daemons share one config (core/placement.py). Before a daemon first defines a
domain placed on its host, it asks the other hosts it was told of (`--peer NAME=URI`)
whether one still holds that domain: a VM whose `host` just changed still runs where
it was, on its own disks, and starting a second one here would split it in two. The
same reading gives `nvirtd status --hosts`. Every connection is read-only, opened for
the question and closed after it, given up after a timeout (a host that is down must
not hold a reconcile), and an answer that could not be had is said as such.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from ..core.ownership import parse_owner
from .hypervisor_threads import in_own_thread

PEER_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class HeldDomain:
    name: str
    running: bool
    file: str
    arrival: str | None = None  # an arrival that host prepares (core/ownership.py)
    arriving_from: str | None = None
    backings: tuple[tuple[str, str], ...] = ()  # a running domain's (disk file, its backing file)
    leaving_for: str | None = None  # its host is drained: where it goes
    move_error: str | None = None  # why its last live migration failed


class PeerUnreachable(Exception):
    """The host did not answer (its libvirt is down, the network is, or the URI is wrong)."""


def _ours(dom: Any, instance: str) -> HeldDomain | None:
    # the live XML of a running domain, the definition of one that is not
    root = ET.fromstring(dom.XMLDesc(0))
    owner = parse_owner(root)
    if owner is None or owner.owned_by != instance:
        return None
    running = dom.isActive() == 1
    return HeldDomain(dom.name(), running, owner.file, owner.arrival, owner.arriving_from,
                      _backings(root) if running else (), owner.leaving_for if running else None,
                      owner.move_error if running else None)


def _backings(root: ET.Element) -> tuple[tuple[str, str], ...]:
    """What each disk file of a running domain is an overlay of (libvirt shows the chain)."""
    pairs = []
    for disk in root.findall("./devices/disk"):
        top, base = disk.find("source"), disk.find("backingStore/source")
        if top is not None and base is not None and top.get("file") and base.get("file"):
            pairs.append((top.get("file", ""), base.get("file", "")))
    return tuple(pairs)


async def _read(uri: str, question: Any) -> Any:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions, not on stderr

    def ask() -> Any:
        conn = libvirt.openReadOnly(uri)
        try:
            return question(conn)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
    try:
        return await in_own_thread(ask, timeout=PEER_TIMEOUT, name="libvirt-peer")
    except TimeoutError:
        raise PeerUnreachable(f"{uri} did not answer within {PEER_TIMEOUT:g} s") from None
    except libvirt.libvirtError as exc:
        raise PeerUnreachable(f"{uri}: {exc.get_error_message() or exc}") from None


async def held(uri: str, instance: str) -> dict[str, HeldDomain]:
    """Every domain of `instance` the host at `uri` holds."""
    def question(conn: Any) -> dict[str, HeldDomain]:
        found = {}
        for dom in conn.listAllDomains():
            try:
                mine = _ours(dom, instance)
            except libvirt.libvirtError:
                continue  # gone while listed
            if mine is not None:
                found[mine.name] = mine
        return found
    return await _read(uri, question)


async def holds(uri: str, name: str, instance: str) -> HeldDomain | None:
    """The domain `name` of `instance`, if the host at `uri` holds it."""
    def question(conn: Any) -> HeldDomain | None:
        try:
            return _ours(conn.lookupByName(name), instance)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
    return await _read(uri, question)
