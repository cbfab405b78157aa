"""What a running guest can take without a restart, and the steps to give it.

PURE: standard library only.

A running domain whose definition changed used to wait for its next boot
(restart-required). Some changes libvirt can make to the running guest: more vCPUs
up to `cpu.max`, a balloon target within `memory.max`, and a NIC or a virtio data disk
plugged in or pulled out. The rendered XML is split accordingly: the *restart hash*
is the hash of the XML without those parts, and the *live parts* say what they are
(`LiveParts`). Both go into the owner element, so the running instance's copy (its
live metadata, kept from the boot and updated after each live change) tells exactly
what the guest has now. When the restart hashes agree, every difference is one of
the live parts, and `plan_live` gives the steps; otherwise the change needs a boot.

A device the guest must release (an unplug) is asked for once and recorded as
pending with the time of the request; libvirt's device-removed event, or the next
look, confirms it. One still there after UNPLUG_WAIT is left for the next boot.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .plan import Act, Action

UNPLUG_WAIT = 60.0  # seconds a guest has to release an unplugged device
PENDING_RECHECK = 5.0  # a pending unplug is looked at this often (the device-removed event comes sooner)


@dataclass(frozen=True, slots=True)
class Device:
    """A hot-pluggable device: the hash of its rendered XML and how libvirt's live XML
    shows it (a NIC's MAC, a disk's alias); `pending_since` once an unplug was asked for."""

    digest: str
    ident: str
    pending_since: int | None = None


@dataclass(frozen=True, slots=True)
class LiveParts:
    vcpus: int | None = None  # the current vCPUs, when cpu.max is declared
    memory_kib: int | None = None  # the balloon target, when memory.max is declared
    devices: dict[str, Device] = field(default_factory=dict)  # "nic:NAME" / "disk:NAME"

    def encode(self) -> str:
        words = []
        if self.vcpus is not None:
            words.append(f"vcpus={self.vcpus}")
        if self.memory_kib is not None:
            words.append(f"memory={self.memory_kib}")
        for key, dev in sorted(self.devices.items()):
            pending = f"!{dev.pending_since}" if dev.pending_since is not None else ""
            words.append(f"{key}={dev.digest}@{dev.ident}{pending}")
        return " ".join(words)


def decode(text: str | None) -> LiveParts | None:
    """The owner element's `live` attribute; None when absent or unreadable (edited by hand)."""
    if text is None:
        return None
    vcpus = memory = None
    devices: dict[str, Device] = {}
    try:
        for word in text.split():
            key, value = word.split("=", 1)
            if key == "vcpus":
                vcpus = int(value)
            elif key == "memory":
                memory = int(value)
            else:
                digest, rest = value.split("@", 1)
                ident, _, since = rest.partition("!")
                devices[key] = Device(digest, ident, int(since) if since else None)
    except ValueError:
        return None
    return LiveParts(vcpus, memory, devices)


def live_idents(root: ET.Element | None) -> frozenset[str]:
    """How a running domain's XML shows its hot-pluggable devices: NIC MACs and disk aliases
    (what `Device.ident` holds; the real and the fake hypervisor both read it so)."""
    if root is None:
        return frozenset()
    macs = {m.get("address", "").lower() for m in root.findall("./devices/interface/mac")}
    aliases = {a.get("name", "") for a in root.findall("./devices/disk/alias")}
    return frozenset((macs | aliases) - {""})


@dataclass(frozen=True, slots=True)
class LivePlan:
    """The steps that bring the running guest to the new definition, and what is left."""

    actions: tuple[Action, ...]
    complete: bool  # nothing pending: the guest now runs the new definition
    message: str | None = None
    requeue_after: float | None = None


def plan_live(wanted: LiveParts, live: LiveParts, present: frozenset[str] | None, *, hotplug: bool,
              now_wall: float) -> LivePlan | str:
    """The live steps from `live` (what the running guest has) to `wanted`, or why the
    change needs a restart. `present` is what libvirt's live XML shows (looked at only
    while an unplug is pending); `hotplug` is False on a driver that cannot plug devices.

    Each step is followed by the record of what the guest has after it, so a pass that
    fails half-way leaves a record that is true (the next pass does not, say, take a
    vCPU count the guest no longer has for its own)."""
    reason = _needs_boot(wanted, live, hotplug)
    if reason is not None:
        return reason
    steps: list[tuple[Action, LiveParts]] = []  # each step, and what the guest has once it is done
    state = live
    if wanted.vcpus != live.vcpus:
        state = dataclasses.replace(state, vcpus=wanted.vcpus)
        steps.append((Action(Act.set_vcpus, size=wanted.vcpus), state))
    if wanted.memory_kib != live.memory_kib:
        state = dataclasses.replace(state, memory_kib=wanted.memory_kib)
        steps.append((Action(Act.set_memory, size=wanted.memory_kib), state))
    waiting, messages = [], []
    for key in sorted(set(wanted.devices) | set(live.devices)):
        want, have = wanted.devices.get(key), live.devices.get(key)
        devices = dict(state.devices)
        if want is not None and have is None:
            devices[key] = want
            state = dataclasses.replace(state, devices=devices)
            steps.append((Action(Act.attach_device, device=key), state))
        elif have is not None and want is None:
            if have.pending_since is None:
                devices[key] = Device(have.digest, have.ident, int(now_wall))
                state = dataclasses.replace(state, devices=devices)
                steps.append((Action(Act.detach_device, device=key), state))
                left = UNPLUG_WAIT
            elif present is not None and have.ident not in present:
                del devices[key]  # released: gone from the live parts
                state = dataclasses.replace(state, devices=devices)
                continue
            else:
                left = have.pending_since + UNPLUG_WAIT - now_wall
                if left <= 0:
                    return (f"{_label(key)}: the guest did not release it within {UNPLUG_WAIT:g} s "
                            "(no device-removed event)")
            waiting.append(left)
            messages.append(f"{_label(key)}: unplug requested, waiting for the guest to release it")
    complete = not waiting
    actions: list[Action] = []
    for i, (action, after) in enumerate(steps):
        actions.append(action)
        if i < len(steps) - 1:
            actions.append(Action(Act.set_live_owner, value=False, detail=after.encode()))
    if actions or state != live or complete:
        actions.append(Action(Act.set_live_owner, value=complete, detail=state.encode()))
    requeue = min(min(waiting), PENDING_RECHECK) if waiting else None
    return LivePlan(tuple(actions), complete, "; ".join(messages) or None, requeue)


def _needs_boot(wanted: LiveParts, live: LiveParts, hotplug: bool) -> str | None:
    """Why the change cannot be made to the running guest; None when all of it can."""
    if wanted.vcpus != live.vcpus and (wanted.vcpus is None or live.vcpus is None or wanted.vcpus < live.vcpus):
        # QEMU refuses to unplug an x86 vCPU the guest has not offered ("device unplug
        # request for not supported device type"): fewer vCPUs take a boot
        return f"cpu.amount: {live.vcpus} -> {wanted.vcpus} vCPUs (vCPUs are added live, not removed)"
    if wanted.memory_kib != live.memory_kib and (wanted.memory_kib is None or live.memory_kib is None):
        return "memory: the balloon's range changed"
    for key in sorted(set(wanted.devices) | set(live.devices)):
        want, have = wanted.devices.get(key), live.devices.get(key)
        if want is not None and have is not None:
            if want.digest != have.digest or have.pending_since is not None:
                return f"{_label(key)}: changed (a device is plugged in or pulled out live, not changed)"
        elif not hotplug and (want is not None or (have is not None and have.pending_since is None)):
            return f"{_label(key)}: this libvirt driver cannot plug devices into a running guest"
    return None


def _label(key: str) -> str:
    kind, _, name = key.partition(":")
    return f"{'NIC' if kind == 'nic' else 'disk'} {name}"
