"""Live changes end to end: a running guest takes more vCPUs, a new balloon target, a NIC
plugged in or pulled out, without a restart; what it cannot take waits for the next boot,
and says why. On libvirt's test driver (vCPUs and memory; it cannot plug devices) and on
the fake hypervisor (devices, and a guest that never lets go of one)."""

from __future__ import annotations

import asyncio

import libvirt

from daemon.adapters.fake_hypervisor import FakeHypervisor
from daemon.core import live_changes
from tests.conftest import domain, write_json
from tests.engine.test_fake_daemon import run, settle
from tests.engine.test_reconcile import wait_for


def elastic(amount_cpu: int = 1, memory: int = 256, **extra: object) -> dict:
    return domain(memory, cpu={"amount": amount_cpu, "max": 4},
                  **{"memory": {"amount": memory, "max": 512, "unit": "MiB"}}, **extra)


async def test_vcpus_and_memory_change_live_on_the_test_driver(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": elastic()}})
    d = await start_daemon(settings)
    dom = fresh_libvirt.lookupByName("web")
    started = dom.ID()
    write_json(dirs["config"] / "a.json", {"domains": {"web": elastic(3, 384)}})
    await d.reload()
    await wait_for(lambda: dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 3, 3, "three vCPUs live")
    assert dom.ID() == started  # the same running instance: no restart
    assert dom.info()[2] == 384 * 1024  # the balloon target
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 3  # and the next boot has them too
    entry = d.entry("web")
    assert entry.phase == "running" and "restart-required" not in entry.conditions, entry
    assert list(entry.last_actions[-4:]) == ["set-vcpus(3)", "set-live-owner", "set-memory(393216)",
                                             "set-live-owner"]
    before = d.hv.mutation_count
    await d.reload(explicit=True)  # nothing left to do
    assert d.hv.mutation_count == before


async def test_what_cannot_change_live_waits_for_the_boot_and_says_why(dirs, settings, start_daemon,
                                                                       fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": elastic(3)}})
    d = await start_daemon(settings)
    write_json(dirs["config"] / "a.json", {"domains": {"web": elastic(2)}})
    await d.reload()
    entry = d.entry("web")
    assert "restart-required" in entry.conditions
    assert entry.message.startswith("cpu.amount: 3 -> 2 vCPUs (vCPUs are added live, not removed)")
    assert fresh_libvirt.lookupByName("web").vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 3
    # a NIC on a driver that cannot plug devices: asked once, then it waits for the boot
    write_json(dirs["config"] / "a.json", {"domains": {"web": elastic(3, interfaces={"lan": {"network": "default"}})}})
    await d.reload()
    await wait_for(lambda: "cannot plug devices" in (d.entry("web").message or ""), 5, "restart-required")
    entry = d.entry("web")
    assert "restart-required" in entry.conditions and entry.message.startswith(
        "NIC lan: this libvirt driver cannot plug devices into a running guest"), entry
    assert d.hv.mutations["attach_device"] == 1


async def test_a_nic_is_plugged_in_and_pulled_out_live_on_the_fake(dirs, settings):
    hv = FakeHypervisor()
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    daemon, task = await run(settings, hv)
    await settle(daemon)
    dom = hv._by_name("web")
    with_nic = domain(interfaces={"lan": {"network": "default"}})
    write_json(dirs["config"] / "a.json", {"domains": {"web": with_nic}})
    await daemon.reload(explicit=True)
    await settle(daemon)
    assert hv._by_name("web") is dom and dom.live.find("./devices/interface") is not None
    entry = daemon.status.entries[("domain", "web")]
    assert "restart-required" not in entry.conditions and dom.live_owner.spec_hash == dom.config_owner.spec_hash
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    await daemon.reload(explicit=True)
    await settle(daemon)
    assert dom.live.find("./devices/interface") is None
    assert dom.live_owner.spec_hash == dom.config_owner.spec_hash  # confirmed: the guest runs the new one
    assert hv.mutations["detach_device"] == 1 and hv.mutations["start"] == 1
    daemon.stop()
    await task


async def test_a_guest_that_never_releases_a_device_is_left_for_its_boot(dirs, settings, monkeypatch):
    monkeypatch.setattr(live_changes, "UNPLUG_WAIT", 0.3)
    hv = FakeHypervisor()
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(interfaces={"lan": {"network": "default"}})}})
    daemon, task = await run(settings, hv)
    await settle(daemon)
    hv._by_name("web").releases_devices = False
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    await daemon.reload(explicit=True)
    await asyncio.sleep(0.05)
    entry = daemon.status.entries[("domain", "web")]
    assert entry.message == "NIC lan: unplug requested, waiting for the guest to release it"
    assert "restart-required" not in entry.conditions
    for _ in range(100):
        await asyncio.sleep(0.05)
        entry = daemon.status.entries[("domain", "web")]
        if "restart-required" in entry.conditions:
            break
    assert entry.message.startswith("NIC lan: the guest did not release it within 0.3 s")
    assert hv.mutations["detach_device"] == 1  # asked once, never again
    assert hv._by_name("web").live.find("./devices/interface") is not None
    daemon.stop()
    await task
