"""plan(desired, observed) -> actions: every decision nvirtd makes, and no I/O.

PURE: standard library only. A total function of plain values, table-tested in
tests/core/test_plan.py. The executor carries the actions out; the reconciler
calls plan() again when libvirt reports the result (level-triggered), so every
plan only has to take the next safe step, and an unchanged world plans nothing.

Long operations never block a worker: a graceful shutdown sends ACPI, asks to be
requeued a few seconds later, re-sends, and destroys once the timeout is past.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .domain_xml import RenderedDomain
from .network_xml import RenderedNetwork, StaticHost
from .observed import BuildPhase, ObservedDomain, ObservedNetwork, OverlayState, Power
from .ownership import DEFAULT_INSTANCE

SHUTDOWN_RESEND_SECONDS = 5.0
MIN_WAIT = 0.01  # the shortest "look again in": below it, the moment has come


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


class Act(StrEnum):
    build_image = "build-image"
    create_overlay = "create-overlay"
    recreate_overlay = "recreate-overlay"
    define = "define"
    set_owner = "set-owner"  # metadata only: what the owner element records changed, not the XML
    set_autostart = "set-autostart"
    start = "start"
    mark_shutdown = "mark-shutdown"  # record when a graceful shutdown began, in the live metadata
    shutdown = "shutdown"
    destroy = "destroy"
    undefine = "undefine"
    reattach_nics = "reattach-nics"
    update_hosts = "update-hosts"


@dataclass(frozen=True, slots=True)
class Action:
    kind: Act
    disk: str | None = None  # image actions
    image: str | None = None  # store image for overlay actions
    value: bool | None = None  # set-autostart
    updates: tuple[tuple[str, StaticHost], ...] = ()  # update-hosts: ("delete" | "add", host), in order

    def __str__(self) -> str:
        if self.updates:
            adds = sum(1 for command, _ in self.updates if command == "add")
            return f"{self.kind}(+{adds} -{len(self.updates) - adds})"
        extra = self.disk or (str(self.value).lower() if self.value is not None else "")
        return f"{self.kind}({extra})" if extra else str(self.kind)


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    phase: Phase = Phase.pending
    conditions: frozenset[Condition] = frozenset()
    requeue_after: float | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ShutdownProgress:
    """When nvirtd started a graceful shutdown of a domain, and last sent ACPI."""

    started_at: float
    last_sent_at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DomainInputs:
    desired: RenderedDomain | None
    observed: ObservedDomain | None
    now: float
    held: bool = False
    conflict: bool = False
    overlays: tuple[OverlayState, ...] = ()
    shutdown: ShutdownProgress | None = None
    start_not_before: float = 0.0
    networks_waiting: tuple[str, ...] = ()  # declared networks not active yet
    instance: str = DEFAULT_INSTANCE  # the nvirtd instance planning: it acts on its own objects only


def _shutdown_steps(inp: DomainInputs, timeout: float) -> tuple[tuple[Action, ...], float]:
    """The next step of a graceful shutdown: (actions, requeue_after)."""
    progress, now = inp.shutdown, inp.now
    if progress is None:
        return (Action(Act.mark_shutdown), Action(Act.shutdown)), min(SHUTDOWN_RESEND_SECONDS, max(timeout, 0.1))
    elapsed = now - progress.started_at
    # a deadline a rounding error away is reached: waiting 1e-13 s would never move a clock
    if elapsed >= timeout - MIN_WAIT:
        return (Action(Act.destroy),), 0.5
    remaining = timeout - elapsed
    since_sent = now - progress.last_sent_at
    if since_sent >= SHUTDOWN_RESEND_SECONDS - MIN_WAIT:
        return (Action(Act.shutdown),), max(MIN_WAIT, min(SHUTDOWN_RESEND_SECONDS, remaining))
    return (), max(MIN_WAIT, min(SHUTDOWN_RESEND_SECONDS - since_sent, remaining))


def _gate(kind: str, desired: object, observed: ObservedDomain | ObservedNetwork | None, *,
          conflict: bool, held: bool, held_phase: Phase, instance: str) -> Plan | None:
    """The rules before any other: never touch what is not ours (not nvirtd's, or
    another nvirtd instance's), nor what is held."""
    if observed is not None and not observed.owned:
        if desired is None:
            return Plan(phase=Phase.removed)
        return Plan(phase=Phase.error, conditions=frozenset({Condition.conflict}),
                    message=f"a {kind} named {observed.name!r} exists and is not managed by nvirtd; left alone")
    if observed is not None and observed.owner is not None and observed.owner.owned_by != instance:
        other = observed.owner.owned_by
        if desired is None:  # not ours to remove: `nvirtd plan` says so
            return Plan(phase=Phase.removed, conditions=frozenset({Condition.foreign}),
                        message=f"belongs to nvirtd instance {other!r}; left alone")
        return Plan(phase=Phase.error, conditions=frozenset({Condition.conflict}),
                    message=f"a {kind} named {observed.name!r} is managed by nvirtd instance {other!r} "
                            f"(from its file {observed.owner.file}); left alone")
    if conflict or held:
        conds = {Condition.held} | ({Condition.conflict} if conflict else set())
        return Plan(phase=held_phase, conditions=frozenset(conds),
                    message="keeping the last good state until the config is fixed")
    return None


def plan_domain(inp: DomainInputs) -> Plan:
    desired, observed = inp.desired, inp.observed
    gate = _gate("domain", desired, observed, conflict=inp.conflict, held=inp.held, held_phase=_phase_of(observed),
                 instance=inp.instance)
    if gate is not None:
        return gate
    if desired is None:
        return _plan_removal(inp)
    return _plan_desired(inp, desired)


def _phase_of(observed: ObservedDomain | None) -> Phase:
    if observed is None:
        return Phase.pending
    if observed.power == Power.running:
        return Phase.running
    return Phase.stopped if observed.power == Power.shutoff else Phase.defined


def _plan_removal(inp: DomainInputs) -> Plan:
    observed = inp.observed
    if observed is None:
        return Plan(phase=Phase.removed)
    if observed.power.active:  # the timeout of the last spec, recorded when it was defined
        timeout = observed.owner.timeout if observed.owner is not None else 120
        actions, after = _shutdown_steps(inp, timeout)
        return Plan(actions=actions, phase=Phase.stopping, requeue_after=after,
                    message="removed from the config: shutting down before undefine")
    if not observed.persistent:
        return Plan(phase=Phase.removed)
    return Plan(actions=(Action(Act.undefine),), phase=Phase.removed)


def _plan_images(inp: DomainInputs) -> tuple[list[Action], set[Condition], str | None, Phase | None, bool,
                                              float | None]:
    """Image steps for nix disks: (actions, conditions, message, blocking phase, needs_stop, retry in)."""
    retry: float | None = None
    actions: list[Action] = []
    conditions: set[Condition] = set()
    message: str | None = None
    blocked: Phase | None = None
    needs_stop = False
    for ov in inp.overlays:
        build = ov.build
        if build.phase == BuildPhase.idle or (build.phase == BuildPhase.failed and (build.retry_at or 0) <= inp.now):
            actions.append(Action(Act.build_image, disk=ov.disk))
        usable = ov.exists and (ov.backing_present or (build.image is not None and build.image == ov.backing))
        if usable:
            if build.phase == BuildPhase.built and build.image != ov.backing:
                if ov.recreate_on_change:
                    needs_stop = True
                    actions.append(Action(Act.recreate_overlay, disk=ov.disk, image=build.image))
                else:
                    conditions.add(Condition.image_outdated)
                    message = (f"disk {ov.disk}: the configuration now builds {build.image}; the overlay stays on "
                               f"{ov.backing} (set nix.onImageChange to recreate, or purge and recreate it)")
            continue
        if build.phase == BuildPhase.built:
            if not ov.exists:
                actions.append(Action(Act.create_overlay, disk=ov.disk, image=build.image))
            elif ov.recreate_on_change:
                needs_stop = True
                actions.append(Action(Act.recreate_overlay, disk=ov.disk, image=build.image))
            else:
                blocked, message = Phase.error, (
                    f"disk {ov.disk}: the overlay's base image {ov.backing} is gone and the configuration "
                    f"now builds {build.image}; set nix.onImageChange to recreate (the old overlay is kept aside)")
        elif build.phase == BuildPhase.failed:
            blocked, message = Phase.error, f"disk {ov.disk}: image build failed: {build.error}"
            if build.retry_at is not None and build.retry_at > inp.now:
                retry = build.retry_at - inp.now if retry is None else min(retry, build.retry_at - inp.now)
        elif blocked is None:
            blocked = Phase.building
            message = f"disk {ov.disk}: building the image"
    return actions, conditions, message, blocked, needs_stop, retry


def _plan_desired(inp: DomainInputs, desired: RenderedDomain) -> Plan:
    observed = inp.observed
    spec = desired.spec
    actions, conditions, message, blocked, needs_stop, retry = _plan_images(inp)
    active = observed is not None and observed.power.active
    if blocked is not None:  # a running build requeues its domains when it ends; a failed one is retried
        builds = tuple(a for a in actions if a.kind == Act.build_image)
        return Plan(actions=builds, phase=blocked, conditions=frozenset(conditions), message=message,
                    requeue_after=retry)

    if needs_stop and active:
        builds = tuple(a for a in actions if a.kind == Act.build_image)
        steps, after = _shutdown_steps(inp, spec.shutdown_timeout)
        return Plan(actions=builds + steps, phase=Phase.stopping, requeue_after=after,
                    message="the image changed and nix.onImageChange is recreate: shutting down")

    needs_define = (
        observed is None
        or not observed.persistent
        or observed.owner is None
        or observed.owner.spec_hash != desired.spec_hash
        or observed.owner.fingerprint is None
        or observed.owner.fingerprint != observed.fingerprint
    )
    if needs_define:
        actions.append(Action(Act.define))
    elif observed is not None and observed.owner is not None and observed.owner.timeout != spec.shutdown_timeout:
        actions.append(Action(Act.set_owner))
    # libvirt keeps autostart across a redefine; a new (or transient) domain has none
    current_autostart = observed.autostart if observed is not None and observed.persistent else False
    if current_autostart != desired.autostart:
        actions.append(Action(Act.set_autostart, value=desired.autostart))

    requeue: float | None = None
    power = observed.power if observed is not None else Power.shutoff
    if spec.state == "stopped":
        if power.active:
            steps, requeue = _shutdown_steps(inp, spec.shutdown_timeout)
            actions.extend(steps)
            phase = Phase.stopping
        else:
            phase = Phase.stopped
        return Plan(actions=tuple(actions), phase=phase, conditions=frozenset(conditions),
                    requeue_after=requeue, message=message)

    phase = Phase.running
    if power == Power.crashed:
        actions.append(Action(Act.destroy))
        power = Power.shutoff
    if power == Power.shutoff:
        if inp.networks_waiting:
            return Plan(actions=tuple(actions), phase=Phase.defined, conditions=frozenset(conditions),
                        requeue_after=1.0, message=f"waiting for network {', '.join(inp.networks_waiting)}")
        if inp.now < inp.start_not_before:
            conditions.add(Condition.crash_loop)
            return Plan(actions=tuple(actions), phase=Phase.defined, conditions=frozenset(conditions),
                        requeue_after=inp.start_not_before - inp.now,
                        message="the guest keeps stopping: next start after a back-off")
        actions.append(Action(Act.start))
    elif power == Power.starting:  # a start under way (ours, or one a killed nvirtd left): look again soon
        phase, requeue = Phase.pending, 1.0
    elif power == Power.paused:
        conditions.add(Condition.paused)
        phase = Phase.defined
    elif power == Power.shutting_down:
        phase, requeue = Phase.stopping, SHUTDOWN_RESEND_SECONDS
    elif power == Power.running:
        live = observed.live_spec_hash if observed is not None else None
        if live is not None and live != desired.spec_hash:
            if spec.restart_on_change:
                steps, requeue = _shutdown_steps(inp, spec.shutdown_timeout)
                actions.extend(steps)
                phase = Phase.stopping
                message = "definition changed and restartOnChange is set: restarting"
            else:
                conditions.add(Condition.restart_required)
                message = message or "the new definition applies at the next boot (restartOnChange is false)"
    return Plan(actions=tuple(actions), phase=phase, conditions=frozenset(conditions),
                requeue_after=requeue, message=message)


@dataclass(frozen=True, slots=True)
class NetworkInputs:
    desired: RenderedNetwork | None
    observed: ObservedNetwork | None
    held: bool = False
    conflict: bool = False
    used_by: tuple[str, ...] = ()  # domains (declared or still defined) whose NICs use it
    reattach_pending: bool = False  # a restart whose guests' NICs were not all plugged back yet
    instance: str = DEFAULT_INSTANCE


def plan_network(inp: NetworkInputs) -> Plan:
    desired, observed = inp.desired, inp.observed
    active = observed is not None and observed.active
    gate = _gate("network", desired, observed, conflict=inp.conflict, held=inp.held,
                 held_phase=Phase.running if active else Phase.pending, instance=inp.instance)
    if gate is not None:
        return gate
    if desired is None:
        if observed is None:
            return Plan(phase=Phase.removed)
        if inp.used_by:
            return Plan(phase=Phase.running if observed.active else Phase.stopped,
                        conditions=frozenset({Condition.in_use}), requeue_after=5.0,
                        message=f"not removed: still used by {', '.join(sorted(inp.used_by))}")
        acts = ((Action(Act.destroy),) if observed.active else ()) + (Action(Act.undefine),)
        return Plan(actions=acts, phase=Phase.removed)

    actions: list[Action] = []
    needs_define = (
        observed is None or not observed.persistent or observed.owner is None
        or observed.owner.spec_hash != desired.spec_hash
        or observed.owner.fingerprint is None or observed.owner.fingerprint != observed.fingerprint
    )
    if needs_define:
        actions.append(Action(Act.define))
    if observed is None or not observed.persistent or not observed.autostart:
        actions.append(Action(Act.set_autostart, value=True))
    # A network's bridge is deleted when it stops and made anew when it starts; guests
    # that kept running keep their taps, detached: they are plugged back in after a start.
    if observed is None:
        actions.append(Action(Act.start))
    elif not observed.active:  # stopped behind our back (virsh net-destroy): guests may be on it
        actions += [Action(Act.start), Action(Act.reattach_nics)]
    elif observed.live_spec_hash != desired.spec_hash and observed.live_restart_hash != desired.restart_hash:
        # libvirt applies a network's new definition only on restart
        actions += [Action(Act.destroy), Action(Act.start), Action(Act.reattach_nics)]
    else:
        if observed.live_hosts != desired.hosts:
            # only static DHCP/DNS hosts differ (changed in the config, or live with
            # virsh net-update): updated in place, no guest loses its link
            actions.append(Action(Act.update_hosts, updates=host_updates(observed.live_hosts, desired.hosts)))
        if inp.reattach_pending:
            actions.append(Action(Act.reattach_nics))
    return Plan(actions=tuple(actions), phase=Phase.running)


def host_updates(live: frozenset[StaticHost], wanted: frozenset[StaticHost]) -> tuple[tuple[str, StaticHost], ...]:
    """Deletions first (libvirt refuses to add a host that clashes with one it has),
    then additions; a changed host is deleted and added again."""
    return (tuple(("delete", h) for h in sorted(live - wanted))
            + tuple(("add", h) for h in sorted(wanted - live)))
