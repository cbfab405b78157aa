"""The vocabulary of plans, and the rules every plan begins with.

PURE: standard library only. A plan is the next safe step for one key, computed by
a total function of plain values: `plan_domain` (core/domain_plan.py) and
`plan_network` (core/network_plan.py), each of (wanted, observation, record, now).
Every decision nvirtd makes about an object is in them: ownership, held files,
missing paths, crash loops, restart policy, image changes. The shell carries the
actions out and calls plan again when libvirt reports the result (level-triggered),
so a plan only takes the next step, and an unchanged world plans nothing.

Long operations never block a worker: a graceful shutdown sends ACPI, asks to be
looked at again a few seconds later, re-sends, and destroys once the timeout is past.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .keys import Key
from .network_xml import StaticHost
from .observed import ObservedDomain, ObservedNetwork
from .record import ShutdownProgress, Wanted

SHUTDOWN_RESEND_SECONDS = 5.0
MIN_WAIT = 0.01  # the shortest "look again in": below it, the moment has come
MISSING_PATH_RETRY = 30.0  # a disk file named in the config may appear later (created by hand)


class Phase(StrEnum):
    pending = "pending"
    building = "building"
    defined = "defined"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    removed = "removed"
    error = "error"


class Condition(StrEnum):
    restart_required = "restart-required"
    image_outdated = "image-outdated"
    conflict = "conflict"
    held = "held"  # its file is broken or in conflict: last good state kept
    paused = "paused"
    crash_loop = "crash-loop"
    in_use = "in-use"
    foreign = "foreign"  # another nvirtd instance's: never changed here
    elsewhere = "elsewhere"  # a fleet's config places it on another host: never changed here
    moving = "moving"  # between two hosts of a fleet: prepared on one, migrated from the other


class Act(StrEnum):
    build_image = "build-image"
    root_image = "root-image"  # a GC root for the base image an overlay uses
    create_overlay = "create-overlay"
    recreate_overlay = "recreate-overlay"
    grow_overlay = "grow-overlay"  # qemu-img resize, while no guest has the overlay open
    grow_disk_live = "grow-disk-live"  # libvirt's blockResize on the running guest
    write_seed = "write-seed"  # the cloud-init seed ISO (core/cloud_seed.py)
    remove_stale_seeds = "remove-stale-seeds"  # seeds of other content, once no running guest has them
    define = "define"
    set_owner = "set-owner"  # metadata only: what the owner element records changed, not the XML
    set_autostart = "set-autostart"
    start = "start"
    mark_shutdown = "mark-shutdown"  # record when a graceful shutdown began, in the live metadata
    shutdown = "shutdown"
    destroy = "destroy"
    undefine = "undefine"
    # live changes of a running guest (core/live_changes.py)
    set_vcpus = "set-vcpus"
    set_memory = "set-memory"  # the balloon target
    attach_device = "attach-device"
    detach_device = "detach-device"  # asks the guest to release it: confirmed later
    set_live_owner = "set-live-owner"  # the running instance's owner element: what it has now
    # a fleet's moves (core/fleet_moves.py)
    migrate = "migrate"  # live, to the host in `device` (value: it stays paused there)
    start_paused = "start-paused"  # a stopped VM to move: its vCPUs never run
    mark_cold = "mark-cold"  # ... and its live metadata says so, for its new host
    set_aside = "set-aside"  # an overlay another host's VM has moved on from: renamed, kept
    mark_leaving = "mark-leaving"  # its host is drained: the live metadata names where it goes
    adopt = "adopt"  # a definition a migration brought: this host's fingerprint of it recorded (metadata)
    reattach_nics = "reattach-nics"
    update_hosts = "update-hosts"


@dataclass(frozen=True, slots=True)
class Action:
    kind: Act
    disk: str | None = None  # image actions
    image: str | None = None  # store image for overlay and root actions
    value: bool | None = None  # set-autostart
    size: int | None = None  # grow actions: the new virtual size in bytes; set-vcpus: count; set-memory: KiB
    device: str | None = None  # attach/detach-device: "nic:NAME" or "disk:NAME"
    # set-live-owner: the live parts it records (LiveParts.encode); define and set-owner: a fleet's
    # arrival ("ready:h1", core/fleet_moves.py); set-aside: why
    detail: str | None = None
    updates: tuple[tuple[str, StaticHost], ...] = ()  # update-hosts: ("delete" | "add", host), in order

    def __str__(self) -> str:
        if self.updates:
            adds = sum(1 for command, _ in self.updates if command == "add")
            return f"{self.kind}(+{adds} -{len(self.updates) - adds})"
        extra = self.disk or self.device or (str(self.value).lower() if self.value is not None else "")
        if self.kind in (Act.set_vcpus, Act.set_memory):
            return f"{self.kind}({self.size})"
        if self.kind == Act.set_live_owner:
            return str(self.kind)
        if self.size is not None:
            extra = f"{extra}, {self.size} bytes"
        return f"{self.kind}({extra})" if extra else str(self.kind)


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    phase: Phase = Phase.pending
    conditions: frozenset[Condition] = frozenset()
    requeue_after: float | None = None
    message: str | None = None
    shutdown: ShutdownProgress | None = None  # the graceful shutdown this plan goes on with
    wake: tuple[Key, ...] = ()  # keys to look at once the actions are done (they wait for this one)


def gate(kind: str, wanted: Wanted, observed: ObservedDomain | ObservedNetwork | None, *,
         held_phase: Phase) -> Plan | None:
    """The rules before any other: never touch what is not ours (not nvirtd's, or
    another nvirtd instance's), nor what is held."""
    declared = wanted.obj is not None
    if observed is not None and not observed.owned:
        if not declared:
            return Plan(phase=Phase.removed)
        return Plan(phase=Phase.error, conditions=frozenset({Condition.conflict}),
                    message=f"a {kind} named {observed.name!r} exists and is not managed by nvirtd; left alone")
    if observed is not None and observed.owner is not None and observed.owner.owned_by != wanted.instance:
        other = observed.owner.owned_by
        if not declared:  # not ours to remove: `nvirtd plan` says so
            return Plan(phase=Phase.removed, conditions=frozenset({Condition.foreign}),
                        message=f"belongs to nvirtd instance {other!r}; left alone")
        return Plan(phase=Phase.error, conditions=frozenset({Condition.conflict}),
                    message=f"a {kind} named {observed.name!r} is managed by nvirtd instance {other!r} "
                            f"(from its file {observed.owner.file}); left alone")
    if wanted.conflict or wanted.held:
        conds = {Condition.held} | ({Condition.conflict} if wanted.conflict else set())
        return Plan(phase=held_phase, conditions=frozenset(conds),
                    message="keeping the last good state until the config is fixed")
    return None

