"""A fleet's moves as tables: each host's next step from what it sees of the other.

h1 runs the VM; its config now places it on h2. h2 prepares the arrival (defined, never
started, empty overlays on h1's very base, then "ready"); h1 migrates once it sees that;
the old overlays are kept aside. Nothing ever starts a VM that another host holds.
"""

from __future__ import annotations

import dataclasses

from daemon.core.domain_plan import plan_domain
from daemon.core.observed import BuildPhase, BuildState, DomainObservation, OverlayState, PeerHold, Power
from daemon.core.plan import Act, Condition, Phase
from daemon.core.record import Now, Record, Wanted
from tests.core.test_plan import desired, observed

BASE = "/nix/store/aaa-img/nixos.qcow2"
D = desired(disks={"root": {"type": "nix", "path": "/cfg.nix"}})
OVERLAY = "/img/vm-root.qcow2"
H1_RUNS = PeerHold("h1", held=True, running=True, backings=((OVERLAY, BASE),))


def on(host, obs, *, elsewhere=None):
    wanted = Wanted("vm", D, "vm.json", elsewhere=elsewhere, host=host)
    return plan_domain(wanted, obs, Record(), Now(0.0, 0.0))


def arrival(state="preparing", *, power=Power.shutoff):
    found = observed(D, power=power, autostart=False)
    return dataclasses.replace(found, owner=dataclasses.replace(found.owner, arrival=state, arriving_from="h1"))


def overlay(exists):
    return OverlayState(disk="root", overlay=OVERLAY, exists=exists, backing=BASE if exists else None,
                        backing_present=exists, build=BuildState(BuildPhase.built, image=BASE))


def kinds(plan):
    return [a.kind for a in plan.actions]


# ---- the new host, h2 -----------------------------------------------------------------
def test_h2_defines_the_arriving_vm_first_never_started_nor_autostarted():
    plan = on("h2", DomainObservation(None, overlays=(overlay(False),), peers=(H1_RUNS,), bases_here=frozenset({BASE})))
    assert kinds(plan) == [Act.define] and plan.actions[0].detail == "preparing:h1"
    assert Condition.moving in plan.conditions and "arriving from host 'h1'" in plan.message


def test_h2_then_makes_the_overlay_on_h1s_very_base():
    plan = on("h2", DomainObservation(arrival(), overlays=(overlay(False),), peers=(H1_RUNS,),
                                      bases_here=frozenset({BASE})))
    assert kinds(plan) == [Act.create_overlay] and plan.actions[0].image == BASE


def test_h2_waits_for_the_base_when_it_does_not_have_it_and_says_how_to_copy_it():
    plan = on("h2", DomainObservation(arrival(), overlays=(overlay(False),), peers=(H1_RUNS,)))
    assert kinds(plan) == [] and "nix copy" in plan.message and BASE in plan.message
    unbuilt = dataclasses.replace(overlay(False), build=BuildState())  # the same config builds the same path
    builds = on("h2", DomainObservation(arrival(), overlays=(unbuilt,), peers=(H1_RUNS,)))
    assert kinds(builds) == [Act.build_image] and "nix copy" in builds.message


def test_h2_marks_it_ready_once_the_disks_are_there_and_then_only_waits():
    ready = on("h2", DomainObservation(arrival(), overlays=(overlay(True),), peers=(H1_RUNS,)))
    assert kinds(ready) == [Act.set_owner] and ready.actions[0].detail == "ready:h1"
    waiting = on("h2", DomainObservation(arrival("ready"), overlays=(overlay(True),), peers=(H1_RUNS,)))
    assert kinds(waiting) == [] and waiting.requeue_after and "which migrates it live" in waiting.message


def test_an_older_overlay_on_h2_is_kept_aside_before_anything_is_made():
    plan = on("h2", DomainObservation(None, overlays=(overlay(True),), peers=(H1_RUNS,), stale_overlays=("root",)))
    assert kinds(plan) == [Act.set_aside] and plan.actions[0].detail == "older"


def test_a_vm_another_host_holds_stopped_is_never_started_beside_it():
    stopped = PeerHold("h1", held=True, running=False)
    fresh = on("h2", DomainObservation(None, overlays=(overlay(True),), peers=(stopped,)))
    assert kinds(fresh) == [] and "may hold it" in fresh.message
    prepared = on("h2", DomainObservation(arrival("ready"), overlays=(overlay(True),), peers=(stopped,)))
    assert kinds(prepared) == [] and "may hold it" in prepared.message


def test_an_unreachable_host_may_hold_it_so_nothing_is_started():
    down = PeerHold("h1", reachable=False, problem="timed out")
    plan = on("h2", DomainObservation(None, overlays=(overlay(True),), peers=(down,)))
    assert kinds(plan) == [] and "unreachable: timed out" in plan.message


def test_once_it_has_arrived_h2_adopts_h1s_definition_without_a_redefine():
    # h1's definition, brought by the migration: this libvirt formats it with other defaults
    written_on_h1 = observed(D, power=Power.running, autostart=False, actual_fp="h2's")
    written_on_h1 = dataclasses.replace(written_on_h1, owner=dataclasses.replace(written_on_h1.owner, host="h1"))
    plan = on("h2", DomainObservation(written_on_h1, overlays=(overlay(True),)))
    assert kinds(plan) == [Act.adopt, Act.set_autostart]


def test_a_definition_edited_on_this_host_is_still_repaired():
    for host in ("h2", None):  # written by this host's libvirt, or before hosts were recorded
        edited = observed(D, power=Power.running, actual_fp="edited")
        edited = dataclasses.replace(edited, owner=dataclasses.replace(edited.owner, host=host))
        assert kinds(on("h2", DomainObservation(edited, overlays=(overlay(True),)))) == [Act.define]


def test_an_arrivals_marker_goes_once_no_other_host_has_it():
    plan = on("h2", DomainObservation(arrival("ready"), overlays=(overlay(True),), peers=(PeerHold("h1"),)))
    assert Act.set_owner in kinds(plan) and plan.actions[kinds(plan).index(Act.set_owner)].detail is None


# ---- the old host, h1 -----------------------------------------------------------------
def test_h1_keeps_it_running_until_h2_is_ready():
    running = observed(D, power=Power.running)
    plan = on("h1", DomainObservation(running, peers=(PeerHold("h2", held=True, arrival="preparing",
                                                                arriving_from="h1"),)), elsewhere="h2")
    assert kinds(plan) == [] and plan.phase == Phase.running and plan.requeue_after
    assert "runs here until h2 has its disks ready" in plan.message


def test_h1_migrates_once_h2_is_ready_for_it():
    ready = PeerHold("h2", held=True, arrival="ready", arriving_from="h1")
    plan = on("h1", DomainObservation(observed(D, power=Power.running), peers=(ready,)), elsewhere="h2")
    assert kinds(plan) == [Act.migrate] and plan.actions[0].device == "h2"


def test_h1_never_migrates_into_an_arrival_prepared_for_another_host():
    for_h3 = PeerHold("h2", held=True, arrival="ready", arriving_from="h3")
    plan = on("h1", DomainObservation(observed(D, power=Power.running), peers=(for_h3,)), elsewhere="h2")
    assert kinds(plan) == []


def test_h1_leaves_a_vm_that_already_runs_on_h2_too_alone_and_says_so_loudly():
    both = PeerHold("h2", held=True, running=True)
    plan = on("h1", DomainObservation(observed(D, power=Power.running), peers=(both,)), elsewhere="h2")
    assert kinds(plan) == [] and plan.phase == Phase.error and "RUNS ON TWO HOSTS" in plan.message


def test_after_the_move_h1_keeps_its_old_overlay_aside_once_h2_runs_it():
    h2_runs = PeerHold("h2", held=True, running=True)
    plan = on("h1", DomainObservation(None, peers=(h2_runs,), stale_overlays=("root",)), elsewhere="h2")
    assert kinds(plan) == [Act.set_aside] and plan.actions[0].detail == "moved-to-h2"
    gone = on("h1", DomainObservation(None, peers=(PeerHold("h2"),), stale_overlays=("root",)), elsewhere="h2")
    assert kinds(gone) == []  # nobody runs it: the overlay may be the only copy, left where it is


def test_a_stopped_vm_moves_live_too_paused_from_start_to_end():
    stopped = observed(D, power=Power.shutoff)
    plan = on("h1", DomainObservation(stopped, peers=(PeerHold("h2"),)), elsewhere="h2")
    assert kinds(plan) == [Act.start_paused, Act.mark_cold] and "its guest does not run" in plan.message
    paused = dataclasses.replace(stopped, power=Power.paused,
                                 live_owner=dataclasses.replace(stopped.owner, cold=True))
    ready = PeerHold("h2", held=True, arrival="ready", arriving_from="h1")
    moves = on("h1", DomainObservation(paused, peers=(ready,)), elsewhere="h2")
    assert kinds(moves) == [Act.migrate] and moves.actions[0].value is True  # it stays paused there
    arrived = on("h2", DomainObservation(paused, overlays=(overlay(True),)))
    assert kinds(arrived) == [Act.destroy] and "never ran" in arrived.message  # powered off, as it was
    user_paused = dataclasses.replace(paused, live_owner=stopped.owner)  # paused by hand: left paused
    assert Act.destroy not in kinds(on("h2", DomainObservation(user_paused, overlays=(overlay(True),))))


def test_a_stopped_vm_whose_new_host_cannot_be_asked_is_left_as_it_is_and_the_status_says_why():
    plan = on("h1", DomainObservation(observed(D, power=Power.shutoff)), elsewhere="h2")
    assert kinds(plan) == [] and "it moves once host 'h2' can be asked" in plan.message


def test_an_arrival_the_config_no_longer_wants_is_undefined_and_nothing_else():
    plan = on("h2", DomainObservation(arrival("ready")), elsewhere="h1")
    assert kinds(plan) == [Act.undefine]


def test_h2_does_nothing_while_the_migration_comes_in():
    incoming = arrival("ready", power=Power.paused)  # libvirt's, until h1's definition replaces the arrival
    plan = on("h2", DomainObservation(incoming, overlays=(overlay(True),), peers=(H1_RUNS,)))
    assert kinds(plan) == [] and "receiving it from host 'h1'" in plan.message


# ---- a drained host and its alternative -----------------------------------------------
def test_a_drained_host_sends_each_vm_to_its_first_alternative_that_is_a_peer_or_stops_it():
    from types import SimpleNamespace

    from daemon.core import placement
    vm = lambda host, hosts=(), evacuate="migrate": SimpleNamespace(  # noqa: E731
        spec=SimpleNamespace(host=host, hosts=list(hosts), evacuate=evacuate))
    domains = {"a": vm("h2", ["h3", "h1"]), "b": vm("h2", evacuate="stop"), "c": vm("h2"), "d": vm("h1", ["h2"])}
    assert placement.drained(domains, "h2", ["h1"]) == ({"a": "h1"}, {"b"})  # c stays; d is not h2's


def test_a_drained_host_first_tells_the_alternative_then_migrates_once_it_is_ready():
    running = observed(D, power=Power.running)
    wanted = Wanted("vm", D, "vm.json", elsewhere="h1", host="h2", drained=True)
    told = plan_domain(wanted, DomainObservation(running, peers=(PeerHold("h1"),)), Record(), Now(0.0, 0.0))
    assert kinds(told) == [Act.mark_leaving] and told.actions[0].device == "h1" and "drained" in told.message
    marked = dataclasses.replace(running, live_owner=dataclasses.replace(running.owner, leaving_for="h1"))
    waits = plan_domain(wanted, DomainObservation(marked, peers=(PeerHold("h1"),)), Record(), Now(0.0, 0.0))
    assert kinds(waits) == []
    ready = PeerHold("h1", held=True, arrival="ready", arriving_from="h2")
    moves = plan_domain(wanted, DomainObservation(marked, peers=(ready,)), Record(), Now(0.0, 0.0))
    assert kinds(moves) == [Act.migrate] and moves.actions[0].device == "h1"


def test_the_alternative_prepares_the_arrival_of_a_vm_that_leaves_for_it():
    leaving = PeerHold("h2", held=True, running=True, leaving_for="h1", backings=((OVERLAY, BASE),))
    wanted = Wanted("vm", D, "vm.json", elsewhere="h2", host="h1")
    plan = plan_domain(wanted, DomainObservation(None, overlays=(overlay(False),), peers=(leaving,)), Record(),
                       Now(0.0, 0.0))
    assert kinds(plan) == [Act.define] and plan.actions[0].detail == "preparing:h2"
    elsewhere_bound = dataclasses.replace(leaving, leaving_for="h3")  # it goes elsewhere: nothing here
    idle = plan_domain(wanted, DomainObservation(None, peers=(elsewhere_bound,)), Record(), Now(0.0, 0.0))
    assert kinds(idle) == []


def test_a_drains_marker_is_cleared_once_it_arrived_or_the_drain_ended():
    running = observed(D, power=Power.running)
    marked = dataclasses.replace(running, live_owner=dataclasses.replace(running.owner, leaving_for="h1"))
    arrived = plan_domain(Wanted("vm", D, "vm.json", elsewhere="h2", host="h1"), DomainObservation(
        marked, peers=(PeerHold("h2"),)), Record(), Now(0.0, 0.0))  # on h1: placed on h2, which is drained
    assert kinds(arrived) == [Act.mark_leaving] and arrived.actions[0].device is None
    undone = plan_domain(Wanted("vm", D, "vm.json", host="h2"), DomainObservation(marked, overlays=(overlay(True),)),
                         Record(), Now(0.0, 0.0))  # on h2: no longer drained before it left
    assert kinds(undone) == [Act.mark_leaving] and undone.actions[0].device is None
