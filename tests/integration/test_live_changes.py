"""Live changes on a real guest: the TCG test guest (a Linux kernel, whose ACPI hotplug
takes a NIC and lets go of one) gets a NIC and a second vCPU while it runs, then loses
the NIC, through nvirtd and its config alone; the guest's console shows each change and
no reboot. A guest that never lets go is tests/integration/test_live_contract.py."""

from __future__ import annotations

import pytest

from tests.conftest import write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.test_boot_and_network import booting, console

pytestmark = pytest.mark.integration
NET = {"forward": "nat", "ip": {"address": "10.214.0.1", "prefix": 24}}


def config(guest, cpus: int, nic: bool) -> dict:
    spec = booting(guest, "nvirtd.hotplug", cpu={"amount": cpus, "max": 2},
                   interfaces={"lan": {"network": "nvt-hot"}} if nic else {})
    return {"networks": {"nvt-hot": NET}, "domains": {"nvt-hot": spec}}


async def test_a_running_guest_takes_a_nic_and_a_vcpu_and_lets_the_nic_go(dirs, system_settings, start_daemon,
                                                                          system_conn, guest):
    write_json(dirs["config"] / "a.json", config(guest, 1, nic=False))
    d = await start_daemon(system_settings)
    seen = lambda: console(dirs["state"], "nvt-hot")  # noqa: E731
    await wait_for(lambda: "NVIRTD-HOTPLUG nics=lo, cpus=0" in seen(), 120, "the guest up, without a NIC")
    instance = system_conn.lookupByName("nvt-hot").ID()

    write_json(dirs["config"] / "a.json", config(guest, 2, nic=True))
    await d.reload()
    await wait_for(lambda: "NVIRTD-HOTPLUG nics=eth0,lo, cpus=0-1" in seen(), 60, "the NIC and the vCPU in the guest")
    assert system_conn.lookupByName("nvt-hot").ID() == instance  # the same QEMU: no restart
    entry = d.entry("nvt-hot")
    assert "restart-required" not in entry.conditions, entry

    write_json(dirs["config"] / "a.json", config(guest, 2, nic=False))
    await d.reload()
    await wait_for(lambda: seen().rstrip().endswith("NVIRTD-HOTPLUG nics=lo, cpus=0-1"), 60, "the NIC released")
    # the guest let go: the device-removed event (or the next look) confirms it
    await wait_for(lambda: d.entry("nvt-hot").message is None, 30, "the unplug confirmed")
    entry = d.entry("nvt-hot")
    assert entry.phase == "running" and "restart-required" not in entry.conditions, entry
    assert system_conn.lookupByName("nvt-hot").ID() == instance
    assert seen().count("NVIRTD-GUEST-BOOTED") == 1  # one boot all along
    assert d.hv.mutations["detach_device"] == 1 and d.hv.mutations["start"] == 1
