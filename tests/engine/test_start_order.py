"""startAfter end to end on libvirt's test driver: a start waits, is woken, and removals
stop dependents first."""

from __future__ import annotations

import libvirt

from tests.conftest import domain, write_json
from tests.engine.test_reconcile import state, wait_for


def order_of_changes(hv) -> list[tuple[str, str]]:
    """Record each change the daemon makes, in order: (domain, operation)."""
    seen: list[tuple[str, str]] = []
    apply = hv.apply

    async def recording(name, ops):
        seen.extend((name, type(op).__name__) for op in ops)
        await apply(name, ops)
    hv.apply = recording
    return seen


async def test_a_domain_starts_only_once_what_it_starts_after_runs(dirs, settings, start_daemon, fresh_libvirt):
    config = {"domains": {"db": domain(state="stopped"), "web": domain(startAfter=["db"])}}
    write_json(dirs["config"] / "a.json", config)
    d = await start_daemon(settings)
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_SHUTOFF  # defined, not started
    assert d.entry("web").phase == "defined" and d.entry("web").message == "waiting for db to run (startAfter)"
    changes = order_of_changes(d.hv)
    config["domains"]["db"]["state"] = "running"
    write_json(dirs["config"] / "a.json", config)
    await d.reload()
    await wait_for(lambda: state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING, 3, "web started")
    starts = [name for name, op in changes if op == "Start"]
    assert starts == ["db", "web"]
    assert d.entry("web").phase == "running" and d.entry("web").message is None
    # at a host's boot libvirt starts db alone; nvirtd starts web once db runs
    assert fresh_libvirt.lookupByName("db").autostart() == 1 and fresh_libvirt.lookupByName("web").autostart() == 0


async def test_removed_together_the_dependent_stops_first(dirs, settings):
    """On the fake, whose guests can ignore ACPI: web takes its whole shutdownTimeout to go,
    and db, which web starts after, waits for that before its own shutdown begins."""
    import asyncio

    from daemon.adapters.fake_hypervisor import FakeHypervisor
    from tests.engine.test_fake_daemon import power, run, settle
    hv = FakeHypervisor()
    write_json(dirs["config"] / "a.json", {"domains": {"db": domain(), "web": domain(startAfter=["db"], shutdownTimeout=1)}})
    daemon, task = await run(settings, hv)
    await settle(daemon)
    hv._by_name("web").obeys_acpi = False
    write_json(dirs["config"] / "a.json", {})
    await daemon.reload(explicit=True)
    await asyncio.sleep(0.4)
    assert power(hv, "web").active and power(hv, "db").active  # db waits while web shuts down
    assert daemon.status.entries[("domain", "db")].message.endswith("waiting for web to stop first "
                                                                     "(startAfter names this one)")
    assert hv._by_name("db").live_owner.shutdown_started is None  # not even asked yet
    for _ in range(100):
        await asyncio.sleep(0.05)
        if power(hv, "db") is None:
            break
    assert power(hv, "web") is None and power(hv, "db") is None and hv.mutations["destroy"] == 1
    daemon.stop()
    await task


async def test_a_dependency_no_file_declares_holds_its_file(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(startAfter=["db"])}})
    d = await start_daemon(settings)
    assert "web" not in {x.name() for x in fresh_libvirt.listAllDomains()}
    assert d.daemon.status.config_errors == ["a.json: domains.web.startAfter: names 'db', which no file declares"]


def test_plan_says_a_start_waits(dirs):
    from tests.service.test_cli import nvirtd
    write_json(dirs["config"] / "a.json", {"domains": {"db": domain(), "web": domain(startAfter=["db"])}})
    shown = nvirtd("plan", "-c", "test:///default", "--config-dir", str(dirs["config"]), "--state-dir",
                   str(dirs["state"]))
    assert "domain db: define, set-autostart(true), start" in shown.stdout
    # no libvirt autostart for web: at boot libvirt would start it beside db, in no order
    assert "domain web: define  (waiting for db to run (startAfter))" in shown.stdout


async def test_a_vm_moved_into_a_file_held_for_its_start_order_keeps_running(dirs, settings, start_daemon,
                                                                            fresh_libvirt):
    """Found by the simulator: the file a VM moved into is held (its startAfter names no
    domain), so the VM is in no good file; it is kept as it was, not removed, and once
    that file is gone it is removed after all."""
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    d = await start_daemon(settings)
    write_json(dirs["config"] / "a.json", {})
    write_json(dirs["config"] / "b.json", {"domains": {"web": domain(startAfter=["nobody"])}})
    await d.reload()
    await d.settle()
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING and d.hv.mutations["shutdown"] == 0
    assert "held" in d.entry("web").conditions
    (dirs["config"] / "b.json").unlink()
    await d.reload()
    await wait_for(lambda: "web" not in {x.name() for x in fresh_libvirt.listAllDomains()}, 10, "web removed")


async def test_a_domain_never_waits_for_itself(dirs, settings, start_daemon, fresh_libvirt):
    """Found by the simulator: a file naming web in web's own startAfter was good while web was
    declared twice (the rule is not checked for a name in conflict), so it became the file's
    last good content; held later, that content made web's removal wait for web."""
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    d = await start_daemon(settings)
    write_json(dirs["config"] / "b.json", {"domains": {"web": domain(startAfter=["web"])}})
    await d.reload()  # web in two files: a conflict, both kept as they are
    (dirs["config"] / "a.json").unlink()
    await d.reload()  # b.json alone: web names itself, b.json is held at its last good content
    (dirs["config"] / "b.json").unlink()
    await d.reload()  # nothing declares web
    await wait_for(lambda: "web" not in {x.name() for x in fresh_libvirt.listAllDomains()}, 10, "web removed")


async def test_with_start_after_agent_a_domain_waits_for_the_agent_not_only_the_run(dirs, settings, monkeypatch):
    """On the fake, whose guest agent comes up when told: web waits while db runs without one."""
    from daemon.adapters.fake_hypervisor import FakeHypervisor
    from daemon.core import domain_plan
    from tests.engine.test_fake_daemon import power, run, settle
    monkeypatch.setattr(domain_plan, "ORDER_RECHECK", 0.2)  # no event says an agent came up: it looks again
    hv = FakeHypervisor()
    write_json(dirs["config"] / "a.json", {"domains": {"db": domain(), "web": domain(startAfter=["db"],
                                                                                     startAfterAgent=True)}})
    daemon, task = await run(settings, hv)
    await settle(daemon)
    assert power(hv, "db").active and not power(hv, "web").active
    assert daemon.status.entries[("domain", "web")].message == (
        "waiting for db to run and answer its guest agent (startAfterAgent)")
    hv._by_name("db").agent = True
    await wait_for(lambda: power(hv, "web").active, 3, "web started once db's agent answers")
    daemon.stop()
    await task
