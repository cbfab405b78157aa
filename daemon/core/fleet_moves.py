"""Moving a running VM between hosts of a fleet: a live migration, never a cold copy.

PURE: standard library only. Each host plans its own side from what it sees of the other
(read only, adapters/hypervisor_fleet.py); nothing else passes between them.

When a running domain's `host` changes from h1 to h2:
1. h2 sees it placed on h2 and running on h1 (and on no other host). It defines the
   domain, never started and without autostart, marked `arrival="preparing"`; then makes
   each overlay empty on the very base h1's overlay has (found in h2's store, or copied
   there first) and writes its seed; then marks it `arrival="ready"`. An overlay of the
   domain already here is an older copy: it is kept aside first, never written into.
2. h1 sees h2's definition ready for it and migrates the VM live, its overlays with it
   (adapters/hypervisor_migrate.py). libvirt makes h1's definition h2's.
3. h2 now has the VM running, defined by h1's definition: its own, same spec hash, no
   redefine (the owner names the host whose libvirt wrote the definition: h2 records its
   own fingerprint of it); autostart is set. h1 keeps its overlays aside (renamed, never deleted) once
   it sees h2 run the VM.
A failed or timed-out migration leaves the VM running on h1, which says why and tries
again; h2 stays ready. Nothing starts a VM that another host holds, running or not.
"""

from __future__ import annotations

from . import placement
from .domain_xml import RenderedDomain
from .observed import BuildPhase, DomainObservation, ObservedDomain, OverlayState, PeerHold, Power
from .plan import MIN_WAIT, Act, Action, Condition, Phase, Plan
from .record import Wanted

MOVE_RECHECK = 5.0  # while a move is prepared on either side, each looks at the other this often
PREPARING, READY = "preparing", "ready"


def marker(host: str, state: str = PREPARING) -> str:
    """An arrival's detail for the define and set-owner actions ("ready:h1")."""
    return f"{state}:{host}"


def parse_marker(detail: str | None) -> tuple[str | None, str | None]:
    """(arrival, arriving from) of an action's detail; (None, None) clears them."""
    if not detail:
        return None, None
    state, _, host = detail.partition(":")
    return state, host


def plan_elsewhere(wanted: Wanted, obs: DomainObservation, held_phase: Phase) -> Plan:
    """A domain a fleet's config places on another host: neither started nor removed here;
    if it runs here, it moves there once that host is ready for it."""
    where, observed = wanted.elsewhere or placement.UNPLACED, obs.domain
    elsewhere = frozenset({Condition.elsewhere})
    moving = frozenset({Condition.elsewhere, Condition.moving})
    if observed is None:
        runner = obs.runs_on()
        if runner is not None and obs.stale_overlays:
            return _set_aside(obs.stale_overlays, f"moved-to-{runner.host}", Phase.removed, elsewhere)
        spec = getattr(wanted.obj, "spec", None)
        alternative = spec is not None and any(placement.is_me(h, wanted.host) for h in spec.hosts)
        # an alternative host looks again now and then: its VMs come here while their host is drained
        return Plan(phase=Phase.removed, conditions=elsewhere, message=placement.describe(where),
                    requeue_after=obs.peer_recheck if alternative and obs.peers else None)
    owner = observed.owner
    if owner is not None and owner.arrival is not None and not observed.power.active:
        # prepared here for a move the config no longer wants: only the definition goes (its
        # overlays, empty, are kept aside once the VM runs elsewhere)
        return Plan(actions=(Action(Act.undefine),), phase=Phase.removed, conditions=elsewhere,
                    message=f"{placement.describe(where)}: the arrival prepared here is undefined")
    if not observed.power.active and where != placement.UNPLACED:
        dest = obs.peer(where)
        if dest is not None and dest.reachable and not dest.running:
            # a stopped VM moves live too, paused from its start to its end: its guest never runs
            return Plan(actions=(Action(Act.start_paused), Action(Act.mark_cold)), phase=held_phase,
                        conditions=moving, requeue_after=MOVE_RECHECK,
                        message=f"stopped here, placed on host {where!r}: started paused (its guest does not "
                                "run) to move it, disks and all, by live migration")
    if not observed.power.active or where == placement.UNPLACED:
        return Plan(phase=held_phase, conditions=elsewhere, message=placement.describe(where)
                    + (f"; stopped here: it moves once host {where!r} can be asked (--peer)"
                       if not observed.power.active and where != placement.UNPLACED else ""))
    dest = obs.peer(where)
    if dest is None:
        return Plan(phase=held_phase, conditions=elsewhere,
                    message=f"{placement.describe(where)}: no --peer names host {where!r}, so it is not moved; "
                            "it runs here")
    if not dest.reachable:
        return Plan(phase=held_phase, conditions=moving, requeue_after=MOVE_RECHECK,
                    message=f"placed on host {where!r}, which does not answer ({dest.problem}): it runs here "
                            "until that host can receive it")
    if dest.running:
        return Plan(phase=Phase.error, conditions=frozenset({Condition.elsewhere, Condition.conflict}),
                    requeue_after=MOVE_RECHECK,
                    message=f"RUNS ON TWO HOSTS: here and on host {where!r}; nvirtd changes neither")
    drained = "this host is drained: " if wanted.drained else ""
    if dest.held and dest.arrival == READY and dest.arriving_from is not None and placement.is_me(
            dest.arriving_from, wanted.host):
        cold = observed.live_owner is not None and observed.live_owner.cold
        return Plan(actions=(Action(Act.migrate, device=where, value=cold),), phase=held_phase, conditions=moving,
                    message=f"{drained}moving to host {where!r} (live migration{', paused' if cold else ''})")
    mark = leaving_mark(observed, where if wanted.drained else None)  # what tells that host to prepare for it
    return Plan(actions=mark, phase=held_phase, conditions=moving, requeue_after=MOVE_RECHECK,
                message=f"{drained or 'placed on host ' + repr(where) + ': '}runs here until {where} has its disks "
                        "ready, then moves there by live migration")


def plan_arrival(obs: DomainObservation, seed_action: Action | None, needs_define: bool) -> Plan | None:
    """A domain placed here that another host runs (or our arrival's definition): the steps
    to receive it, or None when it is not arriving (plan it as any other)."""
    observed = obs.domain
    owner = observed.owner if observed is not None else None
    arriving = owner is not None and owner.arrival is not None
    if observed is not None and not arriving:
        return None
    if observed is not None and observed.power.active:  # the incoming migration: libvirt's until it ends
        return Plan(phase=Phase.pending, conditions=frozenset({Condition.moving}), requeue_after=MOVE_RECHECK,
                    message=f"receiving it from host {owner.arriving_from!r} (live migration)")  # type: ignore[union-attr]
    runner = obs.runs_on()
    if runner is None:
        if arriving and obs.held_elsewhere:  # the other host still has its disks: never start beside it
            return Plan(phase=Phase.pending, conditions=frozenset({Condition.moving}),
                        requeue_after=obs.peer_recheck, message=placement.held_message(obs.held_elsewhere,
                                                                                       obs.peer_recheck))
        return None  # nobody else has it (the arrival's marker is cleared): a domain like any other
    moving = frozenset({Condition.moving})
    if observed is None:
        if obs.stale_overlays:
            return _set_aside(obs.stale_overlays, "older", Phase.pending, moving)
        return Plan(actions=(Action(Act.define, detail=marker(runner.host)),), phase=Phase.pending,
                    conditions=moving, requeue_after=MOVE_RECHECK,
                    message=f"arriving from host {runner.host!r}: defined here, never started; its disks next")
    if needs_define:  # the config changed while it arrives
        return Plan(actions=(Action(Act.define, detail=marker(runner.host)),), phase=Phase.pending,
                    conditions=moving, requeue_after=MOVE_RECHECK, message=f"arriving from host {runner.host!r}")
    actions, waiting = _prepare_overlays(obs.overlays, runner, obs.bases_here)
    if seed_action is not None:
        actions.append(seed_action)
    if waiting:
        return Plan(actions=tuple(actions), phase=Phase.pending, conditions=moving, requeue_after=MOVE_RECHECK,
                    message=f"arriving from host {runner.host!r}: " + "; ".join(waiting))
    if actions:  # no event follows a file made: look again at once
        return Plan(actions=tuple(actions), phase=Phase.pending, conditions=moving, requeue_after=MIN_WAIT,
                    message=f"arriving from host {runner.host!r}: preparing its disks")
    if owner is None or owner.arrival != READY or owner.arriving_from != runner.host:
        return Plan(actions=(Action(Act.set_owner, detail=marker(runner.host, READY)),), phase=Phase.pending,
                    conditions=moving, requeue_after=MOVE_RECHECK,
                    message=f"arriving from host {runner.host!r}: ready")
    failed = f"; its last try failed: {runner.move_error}" if runner.move_error else ""
    return Plan(phase=Phase.pending, conditions=moving, requeue_after=MOVE_RECHECK,
                message=f"ready to receive it from host {runner.host!r}, which migrates it live{failed}")


def _prepare_overlays(overlays: tuple[OverlayState, ...], runner: PeerHold,
                      bases_here: frozenset[str]) -> tuple[list[Action], list[str]]:
    """An empty overlay for each of the arriving VM's, on the very base that one has: the
    migration copies only what the VM wrote (what it reads of the base must be the same)."""
    actions, waiting = [], []
    bases = dict(runner.backings)
    for ov in overlays:
        if ov.exists:
            continue
        base = bases.get(ov.overlay)
        if base is None:
            waiting.append(f"disk {ov.disk}: host {runner.host!r} runs it with no overlay {ov.overlay}, so it "
                           "cannot move live (are the two hosts' images directories the same?)")
        elif base not in bases_here:
            if ov.settings == "nix" and ov.build.phase == BuildPhase.idle:  # the same config builds the same path
                actions.append(Action(Act.build_image, disk=ov.disk))
            building = " (building its configuration here)" if ov.build.phase == BuildPhase.building else ""
            waiting.append(f"disk {ov.disk}: its base {base} is not on this host yet{building}: copy it here "
                           f"(`nix copy --to ssh://THIS-HOST {base}` on {runner.host}), or build the same "
                           "configuration")
        else:
            actions.append(Action(Act.create_overlay, disk=ov.disk, image=base))
    return actions, waiting


def _set_aside(disks: tuple[str, ...], reason: str, phase: Phase, conditions: frozenset[Condition]) -> Plan:
    return Plan(actions=tuple(Action(Act.set_aside, disk=d, detail=reason) for d in disks), phase=phase,
                conditions=conditions, requeue_after=MIN_WAIT,  # no event follows a rename: look again
                message=f"another host runs it: its overlays here are kept aside ({reason}), never deleted")


def arrived(desired: RenderedDomain, observed: ObservedDomain | None, host: str) -> bool:
    """A definition another host's libvirt wrote, for the same spec: a migration's (libvirt
    sends it in its migratable form, so this host's libvirt holds it with other defaults).
    It is adopted as it is: its fingerprint recorded anew, never redefined."""
    owner = observed.owner if observed is not None else None
    return (owner is not None and observed is not None and observed.persistent
            and owner.spec_hash == desired.spec_hash and owner.fingerprint != observed.fingerprint
            and bool(owner.host) and not placement.is_me(owner.host or "", host))


def cold_arrival(observed: ObservedDomain | None) -> Plan | None:
    """A stopped VM that moved here paused (its guest never ran): powered off, as it was."""
    live = observed.live_owner if observed is not None else None
    if observed is None or observed.power != Power.paused or live is None or not live.cold:
        return None
    return Plan(actions=(Action(Act.destroy),), phase=Phase.stopping, requeue_after=MIN_WAIT,
                message="it moved here stopped (paused from start to end, its guest never ran): powered off")


def leaving_mark(observed: ObservedDomain, where: str | None, *, settled: bool = False) -> tuple[Action, ...]:
    """The step that makes a running domain's live metadata name where it leaves for (its host is
    drained), or name nothing (a marker it brought along, or of a drain that ended); `settled`:
    it runs where it belongs, so a failed move's error it brought along goes too."""
    live = observed.live_owner
    have = live.leaving_for if live is not None else None
    stale_error = settled and live is not None and live.move_error is not None
    if (have == where and not stale_error) or not observed.power.active:
        return ()
    return (Action(Act.mark_leaving, device=where),)


def comes_here(obs: DomainObservation, host: str) -> bool:
    """A domain placed elsewhere that comes here: its host is drained, and this is where to."""
    runner = obs.runs_on()
    return runner is not None and bool(runner.leaving_for) and placement.is_me(runner.leaving_for or "", host)


def is_arrival(observed: ObservedDomain | None) -> bool:
    return observed is not None and observed.owner is not None and observed.owner.arrival is not None
