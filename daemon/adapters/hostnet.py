"""Host networking: put a guest's tap device back on its network's bridge.

When libvirt restarts a network (the only way to apply most changes to it), it
deletes and recreates the bridge; the running guests' tap devices stay, detached.
Hot-unplugging and re-plugging the NIC needs the guest's cooperation (ACPI eject),
which a guest without an OS, or a busy one, never gives. Re-enslaving the tap on
the host is what libvirtd itself does when it reconnects guests after a restart,
and the guest only sees its link come back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import structlog

from ..errors import CommandError
from . import proc

log = structlog.get_logger("nvirtd.hostnet")
SYS_NET = "/sys/class/net"


@dataclass(frozen=True, slots=True)
class GuestTap:
    domain: str
    dev: str  # the host-side tap device, e.g. vnet3
    mac: str  # the guest's MAC on it

    @property
    def host_mac(self) -> str:
        """The tap's own MAC: libvirt gives it the guest's with the first byte 0xfe
        (0xfa if the guest's already starts with 0xfe), so the host never claims it."""
        first = "fa" if self.mac.lower().startswith("fe:") else "fe"
        return f"{first}{self.mac.lower()[2:]}"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip().lower()
    except OSError:
        return None


async def plug(tap: GuestTap, bridge: str) -> bool:
    """Put the guest's tap on bridge and bring it up. False when that tap is not the
    guest's any more: gone (the guest stopped meanwhile) or, its name reused, another
    guest's, which must never land on this bridge."""
    address = _read(os.path.join(SYS_NET, tap.dev, "address"))
    if address != tap.host_mac:
        if address is not None:
            log.warning("tap_reused", domain=tap.domain, tap=tap.dev, expected=tap.host_mac, found=address)
        return False
    try:
        await proc.run(["ip", "link", "set", "dev", tap.dev, "master", bridge], domain=tap.domain)
        await proc.run(["ip", "link", "set", "dev", tap.dev, "up"], domain=tap.domain)
    except CommandError:
        if not os.path.exists(os.path.join(SYS_NET, tap.dev)):
            return False
        raise
    return True
