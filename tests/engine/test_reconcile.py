"""The reconcile engine end to end on libvirt's test driver (events fire there).

Each test gets a pristine `test:///default` (see conftest.fresh_libvirt) and a
daemon running in this event loop; `conn` is the test's own connection, used the
way an administrator would use virsh.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import libvirt
import pytest

from daemon.core.ownership import parse_owner
from tests.conftest import domain, write_json


async def wait_for(predicate, timeout=2.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return loop.time()
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def state(conn, name):
    return conn.lookupByName(name).state()[0]


def names(conn):
    return sorted(d.name() for d in conn.listAllDomains())


@pytest.fixture
def two_vms(dirs):
    write_json(dirs["config"] / "web.json", {"domains": {"web": domain(), "db": domain(256, state="running")}})
    return dirs


async def test_converges_defines_starts_and_marks_ownership(two_vms, settings, start_daemon, fresh_libvirt):
    d = await start_daemon(settings)
    conn = fresh_libvirt
    assert names(conn) == ["db", "test", "web"]
    for name in ("web", "db"):
        dom = conn.lookupByName(name)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dom.autostart() == 1
        owner = parse_owner(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert owner is not None and owner.file == "web.json" and owner.fingerprint
    assert d.entry("web").phase == "running"
    assert parse_owner(conn.lookupByName("test").XMLDesc(0)) is None  # the foreign one untouched
    assert conn.lookupByName("test").state()[0] == libvirt.VIR_DOMAIN_RUNNING


async def test_unchanged_config_costs_zero_mutating_calls_on_reload(two_vms, settings, start_daemon):
    d = await start_daemon(settings)
    before = d.hv.mutation_count
    for _ in range(3):
        await d.reload(explicit=True)
    await d.daemon._resync_all()  # the periodic safety resync, too
    await d.settle()
    assert d.hv.mutation_count == before


async def test_daemon_restart_with_everything_running_makes_zero_mutations(two_vms, settings, start_daemon, fresh_libvirt):
    first = await start_daemon(settings)
    assert first.hv.mutation_count > 0
    first.daemon.stop()
    await first.task
    # stopping nvirtd stopped nothing
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    second = await start_daemon(settings)
    assert second.daemon.pipeline.passes >= 2
    assert second.hv.mutation_count == 0, second.hv.mutations


async def test_virsh_destroy_is_repaired_within_a_second(two_vms, settings, start_daemon, fresh_libvirt):
    d = await start_daemon(settings)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    fresh_libvirt.lookupByName("web").destroy()
    t1 = await wait_for(lambda: state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING, what="web restarted")
    assert t1 - t0 < 1.0
    assert d.hv.mutations["start"] >= 3


async def test_virsh_undefine_is_repaired(two_vms, settings, start_daemon, fresh_libvirt):
    await start_daemon(settings)
    dom = fresh_libvirt.lookupByName("db")
    dom.destroy()
    dom.undefine()
    await wait_for(lambda: "db" in names(fresh_libvirt) and state(fresh_libvirt, "db") == libvirt.VIR_DOMAIN_RUNNING,
                   what="db back")
    # the autostart flag of a domain just defined is written with its fingerprint record, moments later
    await wait_for(lambda: fresh_libvirt.lookupByName("db").autostart() == 1, what="db's autostart set again")


async def test_virsh_edit_is_reverted_for_next_boot_without_restart(two_vms, settings, start_daemon, fresh_libvirt):
    d = await start_daemon(settings)
    dom = fresh_libvirt.lookupByName("web")
    dom_id = dom.ID()
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    root.find("vcpu").text = "3"  # what `virsh edit` would do; our metadata stays
    fresh_libvirt.defineXML(ET.tostring(root, encoding="unicode"))
    await wait_for(lambda: ET.fromstring(fresh_libvirt.lookupByName("web").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE)).findtext("vcpu") == "1", what="edit reverted")
    await d.settle()
    assert fresh_libvirt.lookupByName("web").ID() == dom_id  # the guest was not restarted
    assert d.hv.mutations["destroy"] == 0 and d.hv.mutations["shutdown"] == 0


async def test_changed_definition_of_running_domain_is_restart_required(two_vms, settings, start_daemon, fresh_libvirt):
    d = await start_daemon(settings)
    dom_id = fresh_libvirt.lookupByName("web").ID()
    write_json(two_vms["config"] / "web.json", {"domains": {"web": domain(512), "db": domain(256)}})
    await d.reload()
    dom = fresh_libvirt.lookupByName("web")
    assert dom.ID() == dom_id
    inactive = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert inactive.findtext("memory") == str(512 * 1024)
    assert "restart-required" in d.entry("web").conditions
    assert d.entry("db").conditions == []
    assert d.hv.mutations["define_domain"] == 3  # web twice, db once: the unchanged db was not touched


async def test_restart_on_change_restarts_gracefully(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(restartOnChange=True)}})
    d = await start_daemon(settings)
    old_id = fresh_libvirt.lookupByName("web").ID()
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(256, restartOnChange=True)}})
    await d.reload()
    dom = fresh_libvirt.lookupByName("web")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING and dom.ID() != old_id
    assert d.hv.mutations["shutdown"] == 1 and d.hv.mutations["destroy"] == 0
    assert d.entry("web").conditions == []


async def test_state_stopped_shuts_down_and_clears_autostart(two_vms, settings, start_daemon, fresh_libvirt):
    d = await start_daemon(settings)
    write_json(two_vms["config"] / "web.json", {"domains": {"web": domain(state="stopped"), "db": domain(256)}})
    await d.reload()
    dom = fresh_libvirt.lookupByName("web")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and dom.autostart() == 0
    assert d.entry("web").phase == "stopped"


async def test_removed_domain_is_shut_down_then_undefined_and_its_disk_kept(dirs, settings, start_daemon, fresh_libvirt):
    disk = dirs["images"] / "keep.img"
    disk.write_bytes(b"user data")
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(disks={"d": {"type": "file", "path": str(disk)}})}})
    write_json(dirs["config"] / "b.json", {"domains": {"db": domain()}})
    d = await start_daemon(settings)
    (dirs["config"] / "a.json").unlink()
    await d.reload()
    assert names(fresh_libvirt) == ["db", "test"]
    assert d.hv.mutations["shutdown"] == 1 and d.hv.mutations["undefine"] == 1
    assert disk.read_bytes() == b"user data"
    assert d.entry("web") is None


async def test_foreign_domain_with_a_declared_name_is_a_conflict_and_untouched(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"test": domain(), "web": domain()}})
    d = await start_daemon(settings)
    entry = d.entry("test")
    assert entry.phase == "error" and "conflict" in entry.conditions and "not managed by nvirtd" in entry.error
    assert parse_owner(fresh_libvirt.lookupByName("test").XMLDesc(0)) is None
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING


async def test_broken_file_keeps_last_good_state_and_others_go_on(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    write_json(dirs["config"] / "b.json", {"domains": {"db": domain()}})
    d = await start_daemon(settings)
    before = d.hv.mutations["define_domain"]
    (dirs["config"] / "a.json").write_text('{"domains": {"web": {"memory": {"amount": 1, "unit": "GiG"}}}}')
    write_json(dirs["config"] / "b.json", {"domains": {"db": domain(), "cache": domain()}})
    await d.reload()
    assert names(fresh_libvirt) == ["cache", "db", "test", "web"]
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    assert d.hv.mutations["define_domain"] == before + 1  # cache only
    assert any("a.json: domains.web.memory.unit" in e for e in d.daemon.status.config_errors)
    # deleting the broken file is the way to remove its domains
    (dirs["config"] / "a.json").unlink()
    await d.reload()
    assert "web" not in names(fresh_libvirt)


async def test_daemon_started_with_a_broken_file_does_not_remove_its_domains(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    first = await start_daemon(settings)
    first.daemon.stop()
    await first.task
    (dirs["config"] / "a.json").write_text("{ not json")
    second = await start_daemon(settings)
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    assert second.hv.mutation_count == 0
    assert "held" in second.entry("web").conditions


async def test_missing_config_directory_is_not_read_as_empty(two_vms, settings, start_daemon, fresh_libvirt):
    d = await start_daemon(settings)
    for f in two_vms["config"].iterdir():
        f.rename(two_vms["state"] / f.name)
    two_vms["config"].rmdir()
    await d.reload()
    assert names(fresh_libvirt) == ["db", "test", "web"]
    assert "does not exist" in d.daemon.status.config_errors[0]


async def test_guest_that_keeps_stopping_is_restarted_with_backoff(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    d = await start_daemon(settings)
    loop = asyncio.get_running_loop()
    starts, stops = [], []
    for _ in range(2):
        stops.append(loop.time())
        fresh_libvirt.lookupByName("web").shutdown()  # the guest powers itself off
        await wait_for(lambda: state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING, timeout=8,
                       what="restart")
        starts.append(loop.time())
    assert starts[0] - stops[0] < 1.0  # the first restart is immediate
    assert starts[1] - stops[1] >= 4.5  # the second quick death waits 5 s
    fresh_libvirt.lookupByName("web").shutdown()
    await asyncio.sleep(0.3)
    assert "crash-loop" in d.entry("web").conditions  # the third waits 10 s, and says why
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_SHUTOFF


async def test_network_defined_and_started_before_its_domains(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {
        "domains": {"web": domain(interfaces={"lan": {"network": "lab"}})},
        "networks": {"lab": {"ip": {"address": "10.9.0.1", "prefix": 24},
                             "dhcp": {"hosts": {"web": "10.9.0.10"}}}}})
    d = await start_daemon(settings)
    net = fresh_libvirt.networkLookupByName("lab")
    assert net.isActive() == 1 and net.autostart() == 1
    assert "10.9.0.10" in net.XMLDesc(0)
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    assert d.entry("lab", "network").phase == "running"
    assert parse_owner(fresh_libvirt.networkLookupByName("default").XMLDesc(0)) is None


async def test_network_in_use_is_not_removed(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "n.json", {"networks": {"lab": {"ip": {"address": "10.9.0.1"}}}})
    write_json(dirs["config"] / "d.json", {"domains": {"web": domain(interfaces={"lan": {"network": "lab"}})}})
    d = await start_daemon(settings)
    (dirs["config"] / "n.json").unlink()
    await d.reload()
    assert fresh_libvirt.networkLookupByName("lab").isActive() == 1
    assert "in-use" in d.entry("lab", "network").conditions
    (dirs["config"] / "d.json").unlink()
    await d.reload()
    await d.daemon.reload(explicit=True)
    d.daemon.queue.add(("network", "lab"))
    await d.settle()
    assert "lab" not in [n.name() for n in fresh_libvirt.listAllNetworks()]


async def test_missing_disk_file_is_an_error_naming_the_field_and_nothing_is_defined(dirs, settings, start_daemon,
                                                                                       fresh_libvirt):
    missing = dirs["images"] / "nope.img"
    write_json(dirs["config"] / "a.json", {"domains": {
        "web": domain(disks={"d": {"type": "file", "path": str(missing)}}), "db": domain()}})
    d = await start_daemon(settings)
    assert "web" not in names(fresh_libvirt) and state(fresh_libvirt, "db") == libvirt.VIR_DOMAIN_RUNNING
    entry = d.entry("web")
    assert entry.phase == "error"
    assert entry.error == f"a.json: domains.web.disks.d.path: {missing} does not exist"
    missing.write_bytes(b"")
    d.daemon.queue.add(("domain", "web"))  # what the 30 s retry does
    await d.settle()
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING


async def test_network_with_running_domains_is_stable(dirs, settings, start_daemon, fresh_libvirt):
    """The test driver returns live network XML (with connections=N): no redefine loop."""
    write_json(dirs["config"] / "a.json", {
        "domains": {"web": domain(interfaces={"lan": {"network": "lab"}}),
                    "db": domain(interfaces={"lan": {"network": "lab"}})},
        "networks": {"lab": {"ip": {"address": "10.9.0.1", "prefix": 24}}}})
    d = await start_daemon(settings)
    before = d.hv.mutation_count
    await d.daemon._resync_all()
    await d.settle()
    await asyncio.sleep(0.3)
    assert d.hv.mutation_count == before, d.hv.mutations


async def test_a_changed_network_converges_and_then_stays_quiet(dirs, settings, start_daemon, fresh_libvirt):
    """The test driver shows a running network's live definition only: a lease change is
    applied by a restart there (in place on a real libvirtd, see the integration tests),
    and the redefined network must not be defined again and again."""
    def config(ip: str) -> dict:
        return {"domains": {"web": domain(interfaces={"lan": {"network": "lab"}})},
                "networks": {"lab": {"ip": {"address": "10.9.0.1", "prefix": 24},
                                     "dhcp": {"range": {"start": "10.9.0.100", "end": "10.9.0.200"},
                                              "hosts": {"web": ip}}}}}

    write_json(dirs["config"] / "a.json", config("10.9.0.10"))
    d = await start_daemon(settings)
    write_json(dirs["config"] / "a.json", config("10.9.0.11"))
    await d.reload()
    live = fresh_libvirt.networkLookupByName("lab").XMLDesc(0)
    assert "ip='10.9.0.11'" in live and "ip='10.9.0.10'" not in live
    assert d.entry("lab", "network").phase == "running"
    before = d.hv.mutation_count
    await d.reload()
    await d.daemon._resync_all()
    await d.settle()
    assert d.hv.mutation_count == before, d.hv.mutations
    d.daemon.stop()
    await d.task
    again = await start_daemon(settings)
    assert again.hv.mutation_count == 0, again.hv.mutations
