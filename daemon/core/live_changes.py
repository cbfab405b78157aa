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
    while an unplug is pending); `hotplug` is False on a driver that cannot plug devices."""
    actions: list[Action] = []
    if wanted.vcpus != live.vcpus:
        if wanted.vcpus is None or live.vcpus is None or wanted.vcpus < live.vcpus:
            # QEMU refuses to unplug an x86 vCPU the guest has not offered ("device unplug
            # request for not supported device type"): fewer vCPUs take a boot
            return f"cpu.amount: {live.vcpus} -> {wanted.vcpus} vCPUs (removing vCPUs takes a restart)"
        actions.append(Action(Act.set_vcpus, size=wanted.vcpus))
    if wanted.memory_kib != live.memory_kib:
        if wanted.memory_kib is None or live.memory_kib is None:
            return "memory: the balloon's range changed"
        actions.append(Action(Act.set_memory, size=wanted.memory_kib))
    devices, waiting, messages = dict(wanted.devices), [], []
    for key in sorted(set(wanted.devices) | set(live.devices)):
        want, have = wanted.devices.get(key), live.devices.get(key)
        if want is not None and have is not None:
            if want.digest != have.digest or have.pending_since is not None:
                return f"{_label(key)}: changed (a changed device is replaced at the next boot)"
            continue
        if not hotplug:
            return f"{_label(key)}: this libvirt driver cannot plug devices into a running guest"
        if want is not None:
            actions.append(Action(Act.attach_device, device=key))
            continue
        assert have is not None
        if have.pending_since is None:
            actions.append(Action(Act.detach_device, device=key))
            devices[key] = Device(have.digest, have.ident, int(now_wall))
            waiting.append(UNPLUG_WAIT)
            messages.append(f"{_label(key)}: unplug requested, waiting for the guest to release it")
        elif present is not None and have.ident not in present:
            continue  # released: gone from the live parts
        else:
            left = have.pending_since + UNPLUG_WAIT - now_wall
            if left <= 0:
                return (f"{_label(key)}: the guest did not release it within {UNPLUG_WAIT:g} s "
                        "(no device-removed event); it goes at the next boot")
            devices[key] = have
            waiting.append(left)
            messages.append(f"{_label(key)}: unplug requested, waiting for the guest to release it")
    after = LiveParts(wanted.vcpus, wanted.memory_kib, devices)
    complete = not waiting
    if actions or after != live or complete:
        actions.append(Action(Act.set_live_owner, value=complete, detail=after.encode()))
    requeue = min(min(waiting), PENDING_RECHECK) if waiting else None
    return LivePlan(tuple(actions), complete, "; ".join(messages) or None, requeue)


def _label(key: str) -> str:
    kind, _, name = key.partition(":")
    return f"{'NIC' if kind == 'nic' else 'disk'} {name}"


def describe(actions: tuple[Action, ...]) -> str:
    """What was done live, for the log and the status ("vCPUs -> 4, NIC lan plugged in")."""
    words = []
    for a in actions:
        if a.kind == Act.set_vcpus:
            words.append(f"vCPUs -> {a.size}")
        elif a.kind == Act.set_memory:
            words.append(f"memory -> {a.size} KiB")
        elif a.kind == Act.attach_device and a.device:
            words.append(f"{_label(a.device)} plugged in")
        elif a.kind == Act.detach_device and a.device:
            words.append(f"{_label(a.device)} unplug requested")
    return ", ".join(words)
