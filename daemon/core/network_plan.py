"""plan_network(wanted, observation, record, now) -> Plan: every decision about a network.

PURE: standard library only; table-tested in tests/core/test_plan.py and
tests/core/test_network_live_update.py.
"""

from __future__ import annotations

from .keys import domain as domain_key
from .network_xml import RenderedNetwork, StaticHost
from .observed import NetworkObservation, ObservedNetwork
from .plan import Act, Action, Condition, Phase, Plan, gate
from .record import Now, Record, Wanted

IN_USE_RETRY = 5.0  # a removed network still in use: look again (its users' removal also wakes it)


def plan_network(wanted: Wanted, obs: NetworkObservation, record: Record, now: Now | None = None) -> Plan:
    observed = obs.network
    active = observed is not None and observed.active
    ruled = gate("network", wanted, observed, held_phase=Phase.running if active else Phase.pending)
    if ruled is not None:
        return ruled
    if wanted.obj is None:
        return _plan_removal(observed, tuple(sorted(set(wanted.users) | set(obs.used_by))))
    plan = _plan_desired(wanted.obj, observed, record)
    if record.phase != Phase.running:  # its declared users wait for it to run: once it does, they go
        plan = Plan(actions=plan.actions, phase=plan.phase, wake=tuple(domain_key(d) for d in wanted.users))
    return plan


def _plan_removal(observed: ObservedNetwork | None, used_by: tuple[str, ...]) -> Plan:
    if observed is None:
        return Plan(phase=Phase.removed)
    if used_by:
        return Plan(phase=Phase.running if observed.active else Phase.stopped,
                    conditions=frozenset({Condition.in_use}), requeue_after=IN_USE_RETRY,
                    message=f"not removed: still used by {', '.join(used_by)}")
    acts = ((Action(Act.destroy),) if observed.active else ()) + (Action(Act.undefine),)
    return Plan(actions=acts, phase=Phase.removed)


def _plan_desired(desired: RenderedNetwork, observed: ObservedNetwork | None, record: Record) -> Plan:
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
        if record.reattach_pending:  # a restart whose guests were not all plugged back in yet
            actions.append(Action(Act.reattach_nics))
    return Plan(actions=tuple(actions), phase=Phase.running)


def host_updates(live: frozenset[StaticHost], wanted: frozenset[StaticHost]) -> tuple[tuple[str, StaticHost], ...]:
    """Deletions first (libvirt refuses to add a host that clashes with one it has),
    then additions; a changed host is deleted and added again."""
    return (tuple(("delete", h) for h in sorted(live - wanted))
            + tuple(("add", h) for h in sorted(wanted - live)))
