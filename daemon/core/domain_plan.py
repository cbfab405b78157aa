"""plan_domain(wanted, observation, record, now) -> Plan: every decision about a domain.

PURE: standard library only; table-tested in tests/core/test_plan.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import backoff, fleet_moves, live_changes, placement
from .backoff import Backoff
from .domain_xml import RenderedDomain
from .live_changes import LivePlan
from .keys import Key, Kind, network as network_key
from .observed import BuildPhase, DomainObservation, ObservedDomain, OverlayState, Power
from .plan import (MIN_WAIT, MISSING_PATH_RETRY, SHUTDOWN_RESEND_SECONDS, Act, Action, Condition, Phase, Plan,
                   gate)
from .record import Now, Record, ShutdownProgress, Wanted
from .spec_base import human_bytes

MIGRATING_RECHECK = 2.0  # a domain libvirt pauses for a migration is looked at again this often
ORDER_RECHECK = 5.0  # a domain waiting on startAfter looks again this often (it is also woken)
QUICK_DEATH = 60.0  # a guest that stops sooner than this after a start counts as a quick death
# what a missing disk file, share or kernel vetoes: never define or start on a path that is not there
_CREATES = {Act.define, Act.start, Act.create_overlay, Act.recreate_overlay, Act.attach_device}


def plan_domain(wanted: Wanted, obs: DomainObservation, record: Record, now: Now) -> Plan:
    observed = obs.domain
    ruled = gate("domain", wanted, observed, held_phase=_phase_of(observed))
    if ruled is not None:
        return ruled
    if observed is not None and observed.power == Power.migrating:  # libvirt's, on both hosts, until it ends
        return Plan(phase=Phase.pending, conditions=frozenset({Condition.moving}), requeue_after=MIGRATING_RECHECK,
                    message="a live migration is under way")
    cold = fleet_moves.cold_arrival(observed) if wanted.elsewhere is None else None
    if cold is not None:
        return cold
    if wanted.elsewhere is not None:  # neither started nor removed here; moved there if it runs here
        if wanted.obj is not None and fleet_moves.comes_here(obs, wanted.host):  # its host is drained
            arrival = _plan_arrival(wanted.obj, obs)
            if arrival is not None:
                return _veto_missing_paths(arrival, obs) if obs.missing_paths else arrival
        return fleet_moves.plan_elsewhere(wanted, obs, _phase_of(observed))
    shutdown = shutdown_in_effect(observed, record, now)
    if wanted.obj is None:
        return _plan_removal(observed, obs, shutdown, now)
    plan = _plan_desired(_Pass(wanted.obj, obs, shutdown, now, start_not_before(record), wanted.instance,
                               wanted.host))
    retry = _build_retry(obs, now.mono)
    if retry is not None and (plan.requeue_after is None or retry < plan.requeue_after):
        plan = dataclasses.replace(plan, requeue_after=retry)
    return _veto_missing_paths(plan, obs) if obs.missing_paths else plan


def shutdown_in_effect(observed: ObservedDomain | None, record: Record, now: Now) -> ShutdownProgress | None:
    """This process's record of a graceful shutdown, or the one a previous nvirtd began
    (its start is in the running instance's metadata): a restart does not reset the clock."""
    if observed is None or not observed.power.active:
        return None
    if record.shutdown is not None:
        return record.shutdown
    started = observed.live_owner.shutdown_started if observed.live_owner else None
    if started is None:
        return None
    begun = now.mono - max(0.0, now.wall - started)
    return ShutdownProgress(started_at=begun, last_sent_at=now.mono - SHUTDOWN_RESEND_SECONDS)


def start_not_before(record: Record) -> float:
    """First restart at once; after repeated quick deaths 5 s, 10 s, ... up to 5 min."""
    starts = record.starts
    return 0.0 if starts is None else starts.last + backoff.delay(Backoff.crash_loop, starts.count)


def quick_death(record: Record, now: float) -> bool:
    """Whether a start now follows the last one so soon that the guest must have died quickly."""
    starts = record.starts
    return starts is not None and now - starts.last < QUICK_DEATH + backoff.delay(Backoff.crash_loop, starts.count)


@dataclass(frozen=True, slots=True)
class _Pass:
    desired: RenderedDomain
    obs: DomainObservation
    shutdown: ShutdownProgress | None
    now: Now
    start_not_before: float
    instance: str
    host: str = ""  # this host's name in a fleet

    @property
    def observed(self) -> ObservedDomain | None:
        return self.obs.domain


def _shutdown_steps(progress: ShutdownProgress | None, now: float, timeout: float
                    ) -> tuple[tuple[Action, ...], float]:
    """The next step of a graceful shutdown: (actions, requeue_after)."""
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


def _phase_of(observed: ObservedDomain | None) -> Phase:
    if observed is None:
        return Phase.pending
    if observed.power == Power.running:
        return Phase.running
    return Phase.stopped if observed.power == Power.shutoff else Phase.defined


def _plan_removal(observed: ObservedDomain | None, obs: DomainObservation, shutdown: ShutdownProgress | None,
                  now: Now) -> Plan:
    if observed is None:
        return Plan(phase=Phase.removed)
    # a network waiting for its users, the domains this one started after waiting for it to stop
    wake = (tuple(network_key(n) for n in sorted(set(observed.networks)))
            + tuple(Key(Kind.domain, d) for d in obs.wake_after))
    if observed.power.active and obs.dependents_running and shutdown is None:
        return Plan(phase=Phase.stopping, requeue_after=ORDER_RECHECK,
                    message=f"removed from the config: waiting for {', '.join(obs.dependents_running)} to stop "
                            "first (startAfter names this one)")
    if observed.power.active:  # the timeout of the last spec, recorded when it was defined
        timeout = observed.owner.timeout if observed.owner is not None else 120
        actions, after = _shutdown_steps(shutdown, now.mono, timeout)
        return Plan(actions=actions, phase=Phase.stopping, requeue_after=after, shutdown=shutdown,
                    message="removed from the config: shutting down before undefine")
    if not observed.persistent:
        return Plan(phase=Phase.removed, wake=wake)
    return Plan(actions=(Action(Act.undefine),), phase=Phase.removed, wake=wake)


def _veto_missing_paths(plan: Plan, obs: DomainObservation) -> Plan:
    """Nothing that creates or starts the VM while a path it needs is missing; stopping it is fine."""
    if not any(a.kind in _CREATES for a in plan.actions):
        return plan
    defined = obs.domain is not None and obs.domain.persistent
    kept = tuple(a for a in plan.actions
                 if a.kind not in _CREATES and (defined or a.kind != Act.set_autostart))
    after = MISSING_PATH_RETRY if plan.requeue_after is None else min(plan.requeue_after, MISSING_PATH_RETRY)
    return Plan(actions=kept, phase=Phase.error, conditions=plan.conditions, requeue_after=after,
                message="; ".join(obs.missing_paths), shutdown=plan.shutdown)


def _plan_images(p: _Pass) -> tuple[list[Action], set[Condition], str | None, Phase | None, bool]:
    """Image steps for nix disks: (actions, conditions, message, blocking phase, needs_stop)."""
    actions: list[Action] = []
    conditions: set[Condition] = set()
    message: str | None = None
    blocked: Phase | None = None
    needs_stop = False
    now = p.now.mono
    for ov in p.obs.overlays:
        build = ov.build
        if build.phase == BuildPhase.idle or (build.phase == BuildPhase.failed and (build.retry_at or 0) <= now):
            actions.append(Action(Act.build_image, disk=ov.disk))
        if ov.exists and ov.backing and ov.backing_present and not ov.rooted:
            actions.append(Action(Act.root_image, disk=ov.disk, image=ov.backing))  # a base in use is never GC'd
        # a standalone overlay (no backing file: restored from a backup on a host without its
        # base) is a whole disk of its own
        standalone = ov.exists and ov.backing is None
        usable = ov.exists and (standalone or ov.backing_present
                                or (build.image is not None and build.image == ov.backing))
        if usable:
            if build.phase == BuildPhase.built and build.image != ov.backing:
                if ov.recreate_on_change:
                    needs_stop = True
                    actions.append(Action(Act.recreate_overlay, disk=ov.disk, image=build.image))
                else:
                    conditions.add(Condition.image_outdated)
                    on = "is a standalone image (restored)" if standalone else f"stays on {ov.backing}"
                    message = (f"disk {ov.disk}: the configuration now {ov.names} {build.image}; the overlay {on} "
                               f"(set {ov.settings}.onImageChange to recreate, or purge and recreate it)")
            if build.phase == BuildPhase.failed:
                message = message or (f"disk {ov.disk}: evaluating the image failed (the VM keeps its current "
                                      f"image): {build.error}")
            recreating = any(a.kind == Act.recreate_overlay and a.disk == ov.disk for a in actions)
            if not recreating:
                grow, refused = _grow(p, ov)
                if refused is not None:
                    blocked, message = Phase.error, refused
                elif grow is not None:
                    actions.append(grow)
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
                    f"now {ov.names} {build.image}; set {ov.settings}.onImageChange to recreate (the old overlay is kept "
                    "aside)")
        elif build.phase == BuildPhase.failed:
            blocked, message = Phase.error, f"disk {ov.disk}: image build failed: {build.error}"
        elif blocked is None:
            blocked = Phase.building
            message = f"disk {ov.disk}: building the image"
    return actions, conditions, message, blocked, needs_stop


def _grow(p: _Pass, ov: OverlayState) -> tuple[Action | None, str | None]:
    """Growing the overlay to the declared nix.size: (the action, or why it is refused).
    Live on a running guest, offline otherwise; never shrinking, never a copy."""
    wanted, current = ov.wanted_size, ov.virtual_size
    if wanted is None or not current or wanted == current:
        return None, None
    if wanted < current:
        field = f"{p.desired.source_file}: domains.{p.desired.name}.disks.{ov.disk}.nix.size"
        return None, (f"{field}: {human_bytes(wanted)} is smaller than the overlay's {human_bytes(current)} "
                      f"({wanted} < {current} bytes); nvirtd never shrinks a disk, nothing was changed")
    live_disks = p.obs.live_disks
    live = (p.observed is not None and p.observed.power.active
            and (live_disks is None or ov.overlay in live_disks))
    return Action(Act.grow_disk_live if live else Act.grow_overlay, disk=ov.disk, size=wanted), None


def _build_retry(obs: DomainObservation, now: float) -> float | None:
    """When the first failed build's backoff ends: it is retried then, also while the VM
    runs on the image it has (no other event would bring the domain back to it)."""
    waits = [ov.build.retry_at - now for ov in obs.overlays
             if ov.build.phase == BuildPhase.failed and ov.build.retry_at is not None and ov.build.retry_at > now]
    return min(waits) if waits else None


def _needs_define(desired: RenderedDomain, observed: ObservedDomain | None) -> bool:
    return (observed is None or not observed.persistent or observed.owner is None
            or observed.owner.spec_hash != desired.spec_hash
            or observed.owner.fingerprint is None or observed.owner.fingerprint != observed.fingerprint)


def _plan_arrival(desired: RenderedDomain, obs: DomainObservation) -> Plan | None:
    return fleet_moves.plan_arrival(obs, Action(Act.write_seed) if obs.seed_missing else None,
                                    _needs_define(desired, obs.domain))


def _plan_desired(p: _Pass) -> Plan:
    desired, observed, now = p.desired, p.observed, p.now.mono
    spec = desired.spec
    if p.obs.peers or fleet_moves.is_arrival(observed):  # another host may run it: received from there
        arrival = _plan_arrival(desired, p.obs)
        if arrival is not None:
            return arrival
    actions, conditions, message, blocked, needs_stop = _plan_images(p)
    active = observed is not None and observed.power.active
    if blocked is not None:  # a running build requeues its domains when it ends; a failed one is retried
        keep = tuple(a for a in actions if a.kind in (Act.build_image, Act.root_image))
        return Plan(actions=keep, phase=blocked, conditions=frozenset(conditions), message=message)

    if observed is None and p.obs.held_elsewhere:  # never a second VM beside the one that has its disks
        return Plan(phase=Phase.pending, requeue_after=p.obs.peer_recheck, message=placement.held_message(
            p.obs.held_elsewhere, p.obs.peer_recheck))

    if needs_stop and active:
        keep = tuple(a for a in actions if a.kind in (Act.build_image, Act.root_image))
        steps, after = _shutdown_steps(p.shutdown, now, spec.shutdown_timeout)
        return Plan(actions=keep + steps, phase=Phase.stopping, requeue_after=after, shutdown=p.shutdown,
                    message="the base image changed and onImageChange is recreate: shutting down")

    if p.obs.seed_missing:  # before the define that names it and the start that reads it
        actions.append(Action(Act.write_seed))
    if p.obs.stale_seeds and (not active or (observed is not None and observed.live_spec_hash == desired.spec_hash)):
        actions.append(Action(Act.remove_stale_seeds))
    if fleet_moves.arrived(desired, observed, p.host):
        actions.append(Action(Act.adopt))
    elif _needs_define(desired, observed):
        actions.append(Action(Act.define))
    elif observed is not None and observed.owner is not None and (
            observed.owner.timeout != spec.shutdown_timeout or observed.owner.arrival is not None):
        actions.append(Action(Act.set_owner))  # (an arrival's marker, once no other host has it, goes)
    if observed is not None:
        actions.extend(fleet_moves.leaving_mark(observed, None, settled=True))  # a drain's marker, once it ended
    # libvirt keeps autostart across a redefine; a new (or transient) domain has none
    current_autostart = observed.autostart if observed is not None and observed.persistent else False
    if current_autostart != desired.autostart:
        actions.append(Action(Act.set_autostart, value=desired.autostart))

    power = observed.power if observed is not None else Power.shutoff
    if spec.state == "stopped":
        if not power.active:
            return Plan(actions=tuple(actions), phase=Phase.stopped, conditions=frozenset(conditions),
                        message=message)
        steps, requeue = _shutdown_steps(p.shutdown, now, spec.shutdown_timeout)
        return Plan(actions=tuple(actions) + steps, phase=Phase.stopping, conditions=frozenset(conditions),
                    requeue_after=requeue, message=message, shutdown=p.shutdown)
    return _plan_running(p, actions, conditions, message, power)


def _live_change(p: _Pass) -> LivePlan | str | None:
    """The live steps to the new definition, or why it needs a boot (None: no detail known,
    as for a guest started from a definition that recorded no live parts)."""
    live_owner = p.observed.live_owner if p.observed is not None else None
    have = live_changes.decode(live_owner.live) if live_owner is not None else None
    if have is None or live_owner is None or live_owner.restart_hash != p.desired.restart_hash:
        return None
    return live_changes.plan_live(p.desired.live, have, p.obs.live_devices, hotplug=p.obs.hotplug,
                                  now_wall=p.now.wall)


def _plan_running(p: _Pass, actions: list[Action], conditions: set[Condition], message: str | None,
                  power: Power) -> Plan:
    desired, observed, now = p.desired, p.observed, p.now.mono
    phase, requeue, shutdown = Phase.running, None, None
    if power == Power.crashed:
        actions.append(Action(Act.destroy))
        power = Power.shutoff
    if power == Power.shutoff:
        waiting = p.obs.networks_down(p.instance)
        if waiting:
            return Plan(actions=tuple(actions), phase=Phase.defined, conditions=frozenset(conditions),
                        requeue_after=1.0, message=f"waiting for network {', '.join(waiting)}")
        if p.obs.waiting_for:  # woken when they start; the look again is a safety net
            return Plan(actions=tuple(actions), phase=Phase.defined, conditions=frozenset(conditions),
                        requeue_after=ORDER_RECHECK,
                        message=f"waiting for {', '.join(p.obs.waiting_for)} to run"
                                + (" and answer its guest agent (startAfterAgent)" if p.desired.spec.start_after_agent
                                   else " (startAfter)"))
        if now < p.start_not_before:
            conditions.add(Condition.crash_loop)
            return Plan(actions=tuple(actions), phase=Phase.defined, conditions=frozenset(conditions),
                        requeue_after=p.start_not_before - now,
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
            change = _live_change(p)
            if isinstance(change, LivePlan):
                actions.extend(change.actions)
                message, requeue = message or change.message, change.requeue_after
            elif desired.spec.restart_on_change:
                steps, requeue = _shutdown_steps(p.shutdown, now, desired.spec.shutdown_timeout)
                actions.extend(steps)
                phase, shutdown = Phase.stopping, p.shutdown
                message = "definition changed and restartOnChange is set: restarting"
            else:
                conditions.add(Condition.restart_required)
                why = f"{change}; " if change else ""
                message = message or f"{why}the new definition applies at the next boot (restartOnChange is false)"
    wake = tuple(Key(Kind.domain, d) for d in p.obs.wake_after) if any(a.kind == Act.start for a in actions) else ()
    return Plan(actions=tuple(actions), phase=phase, conditions=frozenset(conditions),
                requeue_after=requeue, message=message, shutdown=shutdown, wake=wake)
