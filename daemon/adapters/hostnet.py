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

from ..errors import CommandError
from . import proc

SYS_NET = "/sys/class/net"


async def plug(tap: str, bridge: str, *, domain: str) -> bool:
    """Put tap on bridge and bring it up. False when the tap no longer exists (its
    guest stopped meanwhile): nothing to plug, not an error."""
    try:
        await proc.run(["ip", "link", "set", "dev", tap, "master", bridge], domain=domain)
        await proc.run(["ip", "link", "set", "dev", tap, "up"], domain=domain)
    except CommandError:
        if not os.path.exists(os.path.join(SYS_NET, tap)):
            return False
        raise
    return True
