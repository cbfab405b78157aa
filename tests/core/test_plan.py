"""plan_domain / plan_network as tables: world in, next safe step out."""

from __future__ import annotations

import dataclasses

import pytest

from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.network_xml import render_network
from daemon.core.observed import BuildPhase, BuildState, ObservedDomain, ObservedNetwork, OverlayState, Power
from daemon.core.ownership import Owner
from daemon.core.domain_plan import plan_domain
from daemon.core.network_plan import plan_network
from daemon.core.observed import DomainObservation, NetworkLink, NetworkObservation
from daemon.core.plan import Act, Condition, Phase
from daemon.core.record import Now, Record, ShutdownProgress, StartRecord, Wanted
from daemon.core.spec import Domain, Network, VirtType

CTX = RenderContext(VirtType.kvm, "/img", "/state")


def desired(**spec):
    base = {"memory": {"amount": 256, "unit": "MiB"}}
    return render_domain("vm", Domain.model_validate({**base, **spec}), CTX, source_file="vm.json")


D = desired()
D_STOPPED = desired(state="stopped")
D_RESTART = desired(restartOnChange=True, memory={"amount": 512, "unit": "MiB"})
D_NIX = desired(disks={"root": {"type": "nix", "path": "/cfg.nix"}})
D_NIX_RECREATE = desired(disks={"root": {"type": "nix", "path": "/cfg.nix", "nix": {"onImageChange": "recreate"}}})


def observed(d=D, *, power=Power.running, spec_hash=None, fingerprint="fp", actual_fp="fp", live=None,
             autostart=True, owned=True, persistent=True, instance="default", timeout=None):
    timeout = d.spec.shutdown_timeout if timeout is None else timeout
    owner = Owner("vm.json", spec_hash or d.spec_hash, fingerprint, instance=instance,
                  shutdown_timeout=timeout) if owned else None
    live_hash = (live if live is not None else (spec_hash or d.spec_hash)) if power.active and owned else None
    return ObservedDomain(name="vm", uuid=d.uuid, power=power, owner=owner, live_spec_hash=live_hash,
                          fingerprint=actual_fp, autostart=autostart, persistent=persistent)


def overlay(*, exists=True, backing="/nix/store/aaa-img/nixos.qcow2", present=True, build=BuildState(),
            recreate=False, size=None, wanted=None):
    return OverlayState(disk="root", overlay="/img/vm-root.qcow2", exists=exists, backing=backing if exists else None,
                        backing_present=present and exists, build=build, recreate_on_change=recreate,
                        virtual_size=(size or G20) if exists else 0, wanted_size=wanted)


G10, G20, G30 = 10 * 2**30, 20 * 2**30, 30 * 2**30


BUILT_A = BuildState(BuildPhase.built, image="/nix/store/aaa-img/nixos.qcow2")
BUILT_B = BuildState(BuildPhase.built, image="/nix/store/bbb-img/nixos.qcow2")


def case(d, obs, *, now=0.0, wall=None, held=False, conflict=False, overlays=(), shutdown=None,
         start_not_before=0.0, networks_waiting=(), instance="default", missing=(), live_disks=None):
    """(wanted, observation, record, now) for plan_domain. A back-off until `start_not_before`
    is the record of a second quick start 5 s before it (the crash-loop row's first wait)."""
    wanted = Wanted("vm", d, "vm.json", held=held, conflict=conflict, instance=instance)
    starts = StartRecord(count=2, last=start_not_before - 5) if start_not_before else None
    links = tuple(NetworkLink(n, active=False, instance=None) for n in networks_waiting)
    observation = DomainObservation(obs, overlays=overlays, missing_paths=missing, networks=links,
                                    live_disks=live_disks)
    return wanted, observation, Record(shutdown=shutdown, starts=starts), Now(now, now if wall is None else wall)


def kinds(plan):
    return [a.kind for a in plan.actions]


CASES = [
    pytest.param(case(D, None, now=0), [Act.define, Act.set_autostart, Act.start], Phase.running, set(),
                 id="new-domain-defined-autostarted-started"),
    pytest.param(case(D, observed(), now=0), [], Phase.running, set(), id="in-sync-running-nothing"),
    pytest.param(case(D, observed(power=Power.shutoff), now=0), [Act.start], Phase.running, set(),
                 id="guest-shut-down-is-started-again"),
    pytest.param(case(D, observed(power=Power.shutoff), now=10, start_not_before=20), [], Phase.defined,
                 {Condition.crash_loop}, id="crash-loop-backs-off"),
    pytest.param(case(D, observed(actual_fp="edited"), now=0), [Act.define], Phase.running, set(),
                 id="virsh-edit-drift-redefined-not-restarted"),
    pytest.param(case(D, observed(fingerprint=None), now=0), [Act.define], Phase.running, set(),
                 id="missing-fingerprint-after-crash-redefined"),
    pytest.param(case(D, observed(autostart=False), now=0), [Act.set_autostart], Phase.running, set(),
                 id="autostart-drift"),
    pytest.param(case(D, observed(spec_hash="old", live="old"), now=0), [Act.define], Phase.running,
                 {Condition.restart_required}, id="changed-running-defined-for-next-boot"),
    pytest.param(case(D, observed(live="old"), now=0), [], Phase.running, {Condition.restart_required},
                 id="still-restart-required-after-define"),
    pytest.param(case(D_RESTART, observed(D_RESTART, live="old"), now=0), [Act.mark_shutdown, Act.shutdown], Phase.stopping,
                 set(), id="restart-on-change-shuts-down"),
    pytest.param(case(D_RESTART, observed(D_RESTART, power=Power.shutoff), now=0), [Act.start],
                 Phase.running, set(), id="restart-on-change-starts-after-shutdown"),
    pytest.param(case(D_STOPPED, observed(D_STOPPED, autostart=False), now=0), [Act.mark_shutdown, Act.shutdown],
                 Phase.stopping, set(), id="state-stopped-shuts-down"),
    pytest.param(case(D_STOPPED, observed(D_STOPPED, autostart=True, power=Power.shutoff), now=0),
                 [Act.set_autostart], Phase.stopped, set(), id="state-stopped-no-autostart"),
    pytest.param(case(D_STOPPED, None, now=0), [Act.define], Phase.stopped, set(),
                 id="new-stopped-domain-only-defined"),
    pytest.param(case(None, observed(), now=0), [Act.mark_shutdown, Act.shutdown], Phase.stopping, set(),
                 id="removed-running-graceful-shutdown-first"),
    pytest.param(case(None, observed(), now=3, shutdown=ShutdownProgress(0, 0)), [], Phase.stopping, set(),
                 id="removed-waits-between-acpi"),
    pytest.param(case(None, observed(), now=6, shutdown=ShutdownProgress(0, 0)), [Act.shutdown],
                 Phase.stopping, set(), id="removed-acpi-resent"),
    pytest.param(case(None, observed(), now=121, shutdown=ShutdownProgress(0, 118)), [Act.destroy],
                 Phase.stopping, set(), id="removed-destroy-after-timeout"),
    pytest.param(case(None, observed(power=Power.shutoff), now=0), [Act.undefine], Phase.removed, set(),
                 id="removed-shutoff-undefined"),
    pytest.param(case(None, observed(owned=False), now=0), [], Phase.removed, set(),
                 id="foreign-undeclared-untouched"),
    pytest.param(case(D, observed(owned=False), now=0), [], Phase.error, {Condition.conflict},
                 id="declared-name-of-foreign-domain-is-conflict"),
    # instances: each changes and removes only its own objects
    pytest.param(case(None, observed(), now=0, instance="try-1"), [], Phase.removed, {Condition.foreign},
                 id="another-instances-domain-is-never-removed"),
    pytest.param(case(D, observed(actual_fp="edited"), now=0, instance="try-1"), [], Phase.error,
                 {Condition.conflict}, id="declared-name-another-instance-holds-is-conflict"),
    pytest.param(case(None, observed(instance=None), now=0, instance="try-1"), [], Phase.removed,
                 {Condition.foreign}, id="pre-instance-owner-is-the-default-instances"),
    pytest.param(case(D, observed(instance=None), now=0), [], Phase.running, set(),
                 id="pre-instance-owner-upgrade-changes-nothing"),
    pytest.param(case(None, observed(timeout=600), now=200, shutdown=ShutdownProgress(0, 198)), [],
                 Phase.stopping, set(), id="removal-waits-the-recorded-shutdown-timeout"),
    pytest.param(case(None, observed(timeout=600), now=601, shutdown=ShutdownProgress(0, 598)),
                 [Act.destroy], Phase.stopping, set(), id="removal-destroys-after-the-recorded-timeout"),
    pytest.param(case(None, observed(), now=513.55, shutdown=ShutdownProgress(393.55 + 5.7e-14, 510)),
                 [Act.destroy], Phase.stopping, set(), id="a-deadline-a-rounding-error-away-is-reached"),
    pytest.param(case(D, observed(timeout=600), now=0), [Act.set_owner], Phase.running, set(),
                 id="changed-shutdown-timeout-is-a-metadata-update-not-a-define"),
    pytest.param(case(None, observed(), now=0, held=True), [], Phase.running, {Condition.held},
                 id="broken-file-holds-removal"),
    pytest.param(case(D, observed(power=Power.paused), now=0), [], Phase.defined, {Condition.paused},
                 id="paused-left-alone"),
    pytest.param(case(D, observed(power=Power.starting), now=0), [], Phase.pending, set(),
                 id="libvirt-still-starting-it-is-not-a-user-pause"),
    pytest.param(case(D, observed(power=Power.crashed), now=0), [Act.destroy, Act.start], Phase.running,
                 set(), id="crashed-destroyed-and-started"),
    pytest.param(case(D, observed(), now=0, networks_waiting=("lab",)), [], Phase.running, set(),
                 id="running-domain-ignores-network-wait"),
    pytest.param(case(D, None, now=0, networks_waiting=("lab",)), [Act.define, Act.set_autostart],
                 Phase.defined, set(), id="start-waits-for-network"),
    # nix disks
    pytest.param(case(D_NIX, None, now=0, overlays=(overlay(exists=False),)), [Act.build_image],
                 Phase.building, set(), id="nix-first-build-requested"),
    pytest.param(case(D_NIX, None, now=0, overlays=(overlay(exists=False, build=BuildState(BuildPhase.building)),)),
                 [], Phase.building, set(), id="nix-building-blocks-define"),
    pytest.param(case(D_NIX, None, now=0, overlays=(overlay(exists=False, build=BUILT_A),)),
                 [Act.create_overlay, Act.define, Act.set_autostart, Act.start], Phase.running, set(),
                 id="nix-built-overlay-then-define"),
    pytest.param(case(D_NIX, observed(D_NIX), now=0, overlays=(overlay(),)), [Act.build_image],
                 Phase.running, set(), id="nix-existing-overlay-evaluated-in-background"),
    pytest.param(case(D_NIX, observed(D_NIX), now=0, overlays=(overlay(build=BUILT_A),)), [],
                 Phase.running, set(), id="nix-same-image-nothing"),
    pytest.param(case(D_NIX, observed(D_NIX), now=0, overlays=(overlay(build=BUILT_B),)), [],
                 Phase.running, {Condition.image_outdated}, id="nix-new-image-keeps-overlay"),
    pytest.param(case(D_NIX_RECREATE, observed(D_NIX_RECREATE), now=0, overlays=(overlay(build=BUILT_B, recreate=True),)),
                 [Act.mark_shutdown, Act.shutdown], Phase.stopping, set(), id="nix-recreate-stops-first"),
    pytest.param(case(D_NIX_RECREATE, observed(D_NIX_RECREATE, power=Power.shutoff), now=0,
                              overlays=(overlay(build=BUILT_B, recreate=True),)),
                 [Act.recreate_overlay, Act.start], Phase.running, set(), id="nix-recreate-when-off"),
    pytest.param(case(D_NIX, observed(D_NIX, power=Power.shutoff), now=0, overlays=(overlay(present=False),)),
                 [Act.build_image], Phase.building, set(), id="nix-gc-d-base-rebuilt-before-start"),
    pytest.param(case(D_NIX, observed(D_NIX, power=Power.shutoff), now=0,
                              overlays=(overlay(present=False, build=BUILT_A),)),
                 [Act.start], Phase.running, set(), id="nix-rebuilt-same-path-starts"),
    pytest.param(case(D_NIX, observed(D_NIX, power=Power.shutoff), now=0,
                              overlays=(overlay(present=False, build=BUILT_B),)),
                 [], Phase.error, set(), id="nix-base-gone-new-image-refuses"),
    pytest.param(case(D_NIX, None, now=5, overlays=(overlay(exists=False, build=BuildState(
        BuildPhase.failed, error="boom", retry_at=10)),)), [], Phase.error, set(), id="nix-failed-build-backs-off"),
    pytest.param(case(D_NIX, None, now=11, overlays=(overlay(exists=False, build=BuildState(
        BuildPhase.failed, error="boom", retry_at=10)),)), [Act.build_image], Phase.error, set(),
        id="nix-failed-build-retried-after-backoff"),
    pytest.param(case(D_NIX, observed(D_NIX, power=Power.shutoff), now=0,
                      overlays=(overlay(backing=None, present=False, build=BUILT_A),)),
                 [Act.start], Phase.running, {Condition.image_outdated}, id="nix-restored-standalone-overlay-starts"),
    # growing a disk: in place, live on a running guest, never smaller
    pytest.param(case(D_NIX, observed(D_NIX), now=0, overlays=(overlay(build=BUILT_A, wanted=G30),)),
                 [Act.grow_disk_live], Phase.running, set(), id="nix-size-raised-grows-live"),
    pytest.param(case(D_NIX, observed(D_NIX, power=Power.shutoff), now=0,
                      overlays=(overlay(build=BUILT_A, wanted=G30),)),
                 [Act.grow_overlay, Act.start], Phase.running, set(), id="nix-size-raised-grows-offline-then-starts"),
    pytest.param(case(D_NIX, observed(D_NIX), now=0, overlays=(overlay(build=BUILT_A, wanted=G20),)),
                 [], Phase.running, set(), id="nix-size-reached-nothing"),
    pytest.param(case(D_NIX, observed(D_NIX, live="old"), now=0, live_disks=frozenset({"/other.qcow2"}),
                      overlays=(overlay(build=BUILT_A, wanted=G30),)),
                 [Act.grow_overlay], Phase.running, {Condition.restart_required},
                 id="nix-disk-the-running-guest-lacks-grows-offline"),
    pytest.param(case(D_NIX, observed(D_NIX, power=Power.shutoff), now=0,
                      overlays=(overlay(build=BUILT_A, wanted=G10),)),
                 [], Phase.error, set(), id="nix-size-lowered-refused-nothing-done"),
    pytest.param(case(D_NIX_RECREATE, observed(D_NIX_RECREATE, power=Power.shutoff), now=0,
                      overlays=(overlay(build=BUILT_B, recreate=True, wanted=G30),)),
                 [Act.recreate_overlay, Act.start], Phase.running, set(), id="nix-recreated-overlay-is-not-grown"),
]


@pytest.mark.parametrize("inputs,actions,phase,conditions", CASES)
def test_plan_domain(inputs, actions, phase, conditions):
    plan = plan_domain(*inputs)
    assert kinds(plan) == actions
    assert plan.phase == phase
    assert set(plan.conditions) == conditions


def test_a_lowered_size_names_the_field_and_both_sizes():
    plan = plan_domain(*case(D_NIX, observed(D_NIX), now=0, overlays=(overlay(build=BUILT_A, wanted=G10),)))
    assert plan.message.startswith("vm.json: domains.vm.disks.root.nix.size: 10.0 GiB is smaller than "
                                   "the overlay's 20.0 GiB")
    grow = plan_domain(*case(D_NIX, observed(D_NIX), now=0, overlays=(overlay(build=BUILT_A, wanted=G30),)))
    assert grow.actions[0].size == G30 and grow.actions[0].disk == "root"


def test_failed_build_asks_to_be_looked_at_again_when_its_backoff_ends():
    failed = overlay(exists=False, build=BuildState(BuildPhase.failed, error="boom", retry_at=10))
    plan = plan_domain(*case(D_NIX, None, now=4, overlays=(failed,)))
    assert plan.requeue_after == pytest.approx(6) and "image build failed: boom" in plan.message


def test_plan_is_idempotent_once_the_world_matches():
    """After carrying out a plan, the world it produces plans nothing."""
    first = plan_domain(*case(D, None, now=0))
    assert first.actions
    after = observed(D)
    assert plan_domain(*case(D, after, now=1)).actions == ()


def test_a_start_under_way_is_looked_at_again_soon():
    plan = plan_domain(*case(D, observed(power=Power.starting), now=0))
    assert plan.requeue_after == 1.0 and plan.actions == ()


def test_shutdown_uses_domain_timeout():
    d = desired(state="stopped", shutdownTimeout=10)
    progress = ShutdownProgress(started_at=0, last_sent_at=9)
    plan = plan_domain(*case(d, observed(d, autostart=False), now=10.5, shutdown=progress))
    assert kinds(plan) == [Act.destroy]
    early = plan_domain(*case(d, observed(d, autostart=False), now=9.5, shutdown=progress))
    assert kinds(early) == [] and early.requeue_after == pytest.approx(0.5)


NET = render_network("lab", Network.model_validate({"ip": {"address": "10.9.0.1"}}), {}, source_file="n.json")


def net_case(d, obs, *, used_by=(), reattach_pending=False, users=()):
    return (Wanted("lab", d, "n.json", users=users), NetworkObservation(obs, used_by=used_by),
            Record(reattach_pending=reattach_pending), Now(0, 0))


def net_observed(*, active=True, spec_hash=None, live=None, owned=True, fp="fp", actual="fp", autostart=True):
    h = spec_hash or NET.spec_hash
    return ObservedNetwork(name="lab", uuid=NET.uuid, active=active, owner=Owner("n.json", h, fp) if owned else None,
                           live_spec_hash=(live or h) if active else None, fingerprint=actual, autostart=autostart)


NET_CASES = [
    pytest.param(net_case(NET, None), [Act.define, Act.set_autostart, Act.start], id="new-network"),
    pytest.param(net_case(NET, net_observed()), [], id="network-in-sync"),
    pytest.param(net_case(NET, net_observed(active=False)), [Act.start, Act.reattach_nics],
                 id="network-stopped-behind-our-back-restarts-and-reattaches"),
    pytest.param(net_case(NET, net_observed(), reattach_pending=True), [Act.reattach_nics],
                 id="unfinished-reattach-is-finished"),
    pytest.param(net_case(NET, net_observed(active=False), reattach_pending=True), [Act.start, Act.reattach_nics],
                 id="unfinished-reattach-of-a-stopped-network-once"),
    pytest.param(net_case(NET, net_observed(spec_hash="old", live="old")),
                 [Act.define, Act.destroy, Act.start, Act.reattach_nics], id="network-change-restarts-and-reattaches"),
    pytest.param(net_case(None, net_observed()), [Act.destroy, Act.undefine], id="network-removed"),
    pytest.param(net_case(None, net_observed(), used_by=("web",)), [], id="network-in-use-kept"),
    pytest.param(net_case(None, net_observed(owned=False)), [], id="foreign-network-untouched"),
    pytest.param(net_case(NET, net_observed(owned=False)), [], id="foreign-network-conflict"),
]


@pytest.mark.parametrize("inputs,actions", NET_CASES)
def test_plan_network(inputs, actions):
    assert kinds(plan_network(*inputs)) == actions


def test_network_in_use_says_by_whom():
    plan = plan_network(*net_case(None, net_observed(), used_by=("web", "db")))
    assert Condition.in_use in plan.conditions and "db, web" in plan.message


def test_inputs_are_frozen():
    wanted, observation, record, now = case(D, None, now=0)
    for value, field in ((wanted, "name"), (observation, "domain"), (record, "phase"), (now, "mono")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)


def test_a_failed_image_evaluation_of_a_running_vm_is_retried_when_its_backoff_ends():
    """Found by the simulator (without its safety resync): the VM ran on, and nothing ever
    brought the domain back to retry the build."""
    failed = overlay(build=BuildState(BuildPhase.failed, error="boom", retry_at=10))
    plan = plan_domain(*case(D_NIX, observed(D_NIX), now=4, overlays=(failed,)))
    assert kinds(plan) == [] and plan.phase == Phase.running
    assert plan.requeue_after == pytest.approx(6) and "keeps its current image" in plan.message
