"""The whole daemon on the in-memory hypervisor: the fake is a drop-in for libvirt.

The same promises as on the test driver (tests/engine/test_reconcile.py), on the
fake that the contract suite holds to it: converge, zero mutations on restart,
drift repaired, removal graceful; and guests that ignore ACPI get destroyed only
after their own timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses

from daemon.adapters.fake_hypervisor import FakeHypervisor
from daemon.app import Daemon
from daemon.core.observed import Power
from tests.conftest import domain, write_json


async def run(settings, hv):
    daemon = Daemon(settings, hypervisor=hv)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 5)
    return daemon, task


async def settle(daemon, seconds=0.3):
    for _ in range(200):
        await asyncio.sleep(0.02)
        if daemon.queue.idle(horizon=seconds):
            return


def power(hv, name):
    dom = hv._by_name(name)
    return None if dom is None else dom.power


async def test_the_daemon_converges_restarts_for_free_and_repairs_drift_on_the_fake(dirs, settings):
    hv = FakeHypervisor()
    write_json(dirs["config"] / "a.json", {"domains": {n: domain() for n in ("f1", "f2", "f3")}})
    daemon, task = await run(settings, hv)
    await settle(daemon)
    assert all(power(hv, n) == Power.running for n in ("f1", "f2", "f3"))
    daemon.stop()
    await task
    before = hv.mutation_count
    daemon, task = await run(settings, hv)  # a restart: nothing changed, nothing done
    await settle(daemon)
    assert hv.mutation_count == before
    hv.oob_destroy("f2")  # virsh destroy
    await settle(daemon)
    assert power(hv, "f2") == Power.running
    write_json(dirs["config"] / "a.json", {"domains": {"f1": domain(), "f3": domain()}})
    await daemon.reload(explicit=True)
    await settle(daemon)
    assert power(hv, "f2") is None and hv.mutations["shutdown"] == 1 and hv.mutations["undefine"] == 1
    daemon.stop()
    await task


async def test_a_guest_that_ignores_acpi_is_destroyed_after_its_timeout(dirs, settings):
    hv = FakeHypervisor()
    write_json(dirs["config"] / "a.json", {"domains": {"deaf": domain(shutdownTimeout=1)}})
    daemon, task = await run(dataclasses.replace(settings), hv)
    await settle(daemon)
    hv._by_name("deaf").obeys_acpi = False
    write_json(dirs["config"] / "a.json", {"domains": {}})
    await daemon.reload(explicit=True)
    await asyncio.sleep(0.3)
    assert power(hv, "deaf") == Power.running and hv._by_name("deaf").live_owner.shutdown_started
    for _ in range(100):
        await asyncio.sleep(0.05)
        if power(hv, "deaf") is None:
            break
    assert power(hv, "deaf") is None and hv.mutations["destroy"] == 1
    daemon.stop()
    await task
