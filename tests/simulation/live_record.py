"""Invariant 7: what a running guest's live record says it has, it has.

The live record (the running instance's owner element, core/live_changes.py) is how
nvirtd knows which vCPUs, balloon target and devices a guest has; a record that lies
makes the next pass plan from a false start (a "hot-add" that is really an unplug).
Checked after every change the daemon makes, including one that failed half-way.
"""

from __future__ import annotations

from typing import Any

from daemon.adapters.fake_hypervisor_live import kib_of
from daemon.core import live_changes
from daemon.core.observed import Power


def live_record_lie(dom: Any) -> str | None:
    if dom is None or dom.power != Power.running or dom.live is None or dom.live_owner is None:
        return None
    parts = live_changes.decode(dom.live_owner.live)
    if parts is None:
        return None
    vcpu = dom.live.find("vcpu")
    vcpus = int(vcpu.get("current") or vcpu.text) if vcpu is not None else 1
    if parts.vcpus is not None and parts.vcpus != vcpus:
        return f"its record says {parts.vcpus} vCPUs, the guest has {vcpus}"
    current = dom.live.find("currentMemory")
    kib = kib_of(current if current is not None else dom.live.find("memory"))
    if parts.memory_kib is not None and parts.memory_kib != kib:
        return f"its record says {parts.memory_kib} KiB, the guest's balloon is at {kib}"
    present = live_changes.live_idents(dom.live)
    missing = {d.ident for d in parts.devices.values() if d.pending_since is None} - present
    macs = {m.get("address", "").lower() for m in dom.live.findall("./devices/interface/mac")}
    unrecorded = macs - {d.ident for d in parts.devices.values()}
    if missing or unrecorded:
        return f"its record and its devices differ: recorded but absent {sorted(missing)}, " \
               f"present but unrecorded {sorted(unrecorded)}"
    return None
