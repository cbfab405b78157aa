"""What a running guest takes live, as a table: the restart hash splits the definition,
plan_live gives the steps or the reason for a boot."""

from __future__ import annotations

import pytest

from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.live_changes import Device, LiveParts, LivePlan, decode, plan_live
from daemon.core.spec import Domain, VirtType

CTX = RenderContext(VirtType.kvm, "/var/lib/libvirt/images", "/var/lib/nvirtd")
NOW = 1_800_000_000.0


def rendered(**spec):
    base = {"memory": {"amount": 1, "max": 4, "unit": "GiB"}, "cpu": {"amount": 2, "max": 8}}
    return render_domain("web", Domain.model_validate(base | spec), CTX, source_file="a.json")


def kinds(plan: LivePlan) -> list[str]:
    return [str(a) for a in plan.actions]


def test_what_a_running_guest_takes_live_leaves_the_restart_hash_alone():
    a = rendered()
    more = rendered(cpu={"amount": 6, "max": 8}, memory={"amount": 3, "max": 4, "unit": "GiB"},
                    interfaces={"lan": {"network": "default"}},
                    disks={"root": {"type": "file", "path": "/r.qcow2"}, "data": {"type": "block", "path": "/dev/sdz"}})
    assert a.spec_hash != more.spec_hash
    assert rendered(disks={"root": {"type": "file", "path": "/r.qcow2"}}).restart_hash != a.restart_hash  # vda
    assert more.restart_hash == rendered(disks={"root": {"type": "file", "path": "/r.qcow2"}}).restart_hash
    for needs_boot in ({"cpu": {"amount": 2, "max": 6}}, {"memory": {"amount": 1, "max": 5, "unit": "GiB"}},
                       {"enableVnc": True}):
        assert rendered(**needs_boot).restart_hash != a.restart_hash, needs_boot


def test_the_live_parts_survive_the_owner_element_and_an_edit_by_hand_is_unknown():
    parts = rendered(interfaces={"lan": {"network": "default"}}).live
    assert decode(parts.encode()) == parts and parts.vcpus == 2 and parts.memory_kib == 2**20
    assert decode("vcpus=two") is None and decode(None) is None


def plan(want: LiveParts, have: LiveParts, present=None, hotplug=True, now=NOW):
    return plan_live(want, have, present, hotplug=hotplug, now_wall=now)


NIC = Device("aaaa", "52:54:00:00:00:01")


@pytest.mark.parametrize("want, have, steps", [
    (LiveParts(4, 2048), LiveParts(2, 2048), ["set-vcpus(4)", "set-live-owner"]),
    (LiveParts(2, 1024), LiveParts(2, 2048), ["set-memory(1024)", "set-live-owner"]),
    (LiveParts(2, 2048, {"nic:lan": NIC}), LiveParts(2, 2048), ["attach-device(nic:lan)", "set-live-owner"]),
    (LiveParts(2, 2048), LiveParts(2, 2048, {"nic:lan": NIC}), ["detach-device(nic:lan)", "set-live-owner"]),
    (LiveParts(2, 2048), LiveParts(2, 2048), ["set-live-owner"]),  # the same parts: only the record
])
def test_live_steps(want, have, steps):
    result = plan(want, have)
    assert isinstance(result, LivePlan) and kinds(result) == steps


@pytest.mark.parametrize("want, have, reason", [
    (LiveParts(1), LiveParts(2), "cpu.amount: 2 -> 1 vCPUs (vCPUs are added live, not removed)"),
    (LiveParts(2, None), LiveParts(2, 2048), "memory: the balloon's range changed"),
    (LiveParts(devices={"nic:lan": Device("bbbb", NIC.ident)}), LiveParts(devices={"nic:lan": NIC}),
     "NIC lan: changed (a device is plugged in or pulled out live, not changed)"),
])
def test_what_needs_a_boot_says_why(want, have, reason):
    assert plan(want, have) == reason


def test_each_step_is_recorded_before_the_next_so_a_half_done_pass_leaves_a_true_record():
    result = plan(LiveParts(4, 1024, {"nic:lan": NIC}), LiveParts(2, 2048))
    assert kinds(result) == ["set-vcpus(4)", "set-live-owner", "set-memory(1024)", "set-live-owner",
                             "attach-device(nic:lan)", "set-live-owner"]
    records = [decode(a.detail) for a in result.actions if a.detail is not None]
    assert records[0] == LiveParts(4, 2048) and records[1] == LiveParts(4, 1024)  # after vCPUs, after memory
    assert [a.value for a in result.actions if a.detail is not None] == [False, False, True]


def test_a_driver_that_cannot_plug_devices_waits_for_the_boot():
    assert plan(LiveParts(devices={"nic:lan": NIC}), LiveParts(), hotplug=False) == (
        "NIC lan: this libvirt driver cannot plug devices into a running guest")
    assert isinstance(plan(LiveParts(4), LiveParts(2), hotplug=False), LivePlan)  # vCPUs still go live


def test_an_unplug_is_asked_once_then_confirmed_or_left_for_the_boot():
    asked = plan(LiveParts(), LiveParts(devices={"nic:lan": NIC}))
    assert not asked.complete and asked.requeue_after == 5.0
    recorded = decode(asked.actions[-1].detail)
    assert recorded.devices["nic:lan"].pending_since == int(NOW)
    assert asked.actions[-1].value is False  # not yet the new definition
    waiting = plan(LiveParts(), recorded, present=frozenset({NIC.ident}), now=NOW + 10)
    assert isinstance(waiting, LivePlan) and waiting.actions == ()  # nothing asked again
    assert waiting.message == "NIC lan: unplug requested, waiting for the guest to release it"
    released = plan(LiveParts(), recorded, present=frozenset(), now=NOW + 10)
    assert released.complete and kinds(released) == ["set-live-owner"] and decode(released.actions[0].detail).devices == {}
    given_up = plan(LiveParts(), recorded, present=frozenset({NIC.ident}), now=NOW + 61)
    assert given_up.startswith("NIC lan: the guest did not release it within 60 s")


def test_a_data_disk_whose_file_is_not_there_is_not_plugged_in():
    """The missing-path veto covers a live plug as it covers a define: nothing is asked of libvirt."""
    from daemon.core.domain_plan import plan_domain
    from daemon.core.observed import DomainObservation, ObservedDomain, Power
    from daemon.core.record import Now, Record, Wanted
    was = rendered()
    now = rendered(disks={"root": {"type": "file", "path": "/r.qcow2"}, "data": {"type": "file", "path": "/nowhere.img"}})
    was_with_root = rendered(disks={"root": {"type": "file", "path": "/r.qcow2"}})
    assert was_with_root.restart_hash == now.restart_hash and was.spec_hash != now.spec_hash
    observed = ObservedDomain(name="web", uuid=now.uuid, power=Power.running, owner=was_with_root.owner,
                              live_spec_hash=was_with_root.spec_hash, fingerprint="f", autostart=True,
                              live_owner=was_with_root.owner)
    obs = DomainObservation(observed, missing_paths=("a.json: domains.web.disks.data.path: /nowhere.img does not exist",))
    plan = plan_domain(Wanted("web", now, "a.json"), obs, Record(), Now(100.0, NOW))
    assert not any(str(a).startswith(("attach-device", "define")) for a in plan.actions), plan.actions
    assert plan.phase == "error" and "nowhere.img does not exist" in plan.message
