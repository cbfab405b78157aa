"""Instances: two nvirtd on one libvirt never touch each other's VMs.

Both daemons run in this process against the same in-process test driver (its
state is shared between connections of one process), each with its own config
directory and state directory, as two teams or a `run --once` trial next to the
service would.
"""

from __future__ import annotations

import asyncio
import dataclasses

import libvirt
import pytest

from daemon.__main__ import parser
from daemon.commands import cmd_plan
from daemon.app import Daemon
from daemon.cliargs import default_instance
from daemon.core.ownership import NAMESPACE, PREFIX, owner_xml, parse_owner
from daemon.runtime.statelock import StateDirLocked
from tests.conftest import TEST_URI, domain, write_json


@pytest.fixture
def second(tmp_path, settings):
    dirs = {k: tmp_path / f"b-{k}" for k in ("config", "state", "images")}
    for p in dirs.values():
        p.mkdir(mode=0o755)
    return dirs, dataclasses.replace(settings, config_dir=str(dirs["config"]), state_dir=str(dirs["state"]),
                                     images_dir=str(dirs["images"]), instance=default_instance(str(dirs["config"])))


async def test_a_second_instance_never_removes_the_first_ones_vms(dirs, settings, second, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"prodvm": domain()}})
    a = await start_daemon(settings)  # the default instance, as the service
    bdirs, bsettings = second
    write_json(bdirs["config"] / "b.json", {"domains": {"demovm": domain()}})
    b = await start_daemon(bsettings)
    assert fresh_libvirt.lookupByName("prodvm").isActive() == 1, "the second instance stopped the first one's VM"
    assert fresh_libvirt.lookupByName("demovm").isActive() == 1
    assert b.hv.mutations["shutdown"] == b.hv.mutations["undefine"] == 0
    owner = parse_owner(fresh_libvirt.lookupByName("demovm").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert owner.instance == bsettings.instance and bsettings.instance.startswith("b-config-")
    # and the other way round: the service does not remove the trial's VM either
    await a.reload()
    assert fresh_libvirt.lookupByName("demovm").isActive() == 1


async def test_a_name_another_instance_holds_is_a_conflict_naming_it(dirs, settings, second, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"shared": domain()}})
    await start_daemon(settings)
    xml_before = fresh_libvirt.lookupByName("shared").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    bdirs, bsettings = second
    write_json(bdirs["config"] / "b.json", {"domains": {"shared": domain(512)}})
    b = await start_daemon(bsettings)
    entry = b.entry("shared")
    assert entry.phase == "error" and "conflict" in entry.conditions
    assert "managed by nvirtd instance 'default'" in entry.error
    assert b.hv.mutation_count == 0
    assert fresh_libvirt.lookupByName("shared").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == xml_before


async def test_plan_of_another_instance_shows_foreign_vms_as_left_alone(dirs, settings, second, start_daemon,
                                                                          fresh_libvirt, capsys):
    write_json(dirs["config"] / "a.json", {"domains": {"prodvm": domain()}})
    await start_daemon(settings)
    bdirs, _ = second
    write_json(bdirs["config"] / "b.json", {"domains": {}})
    capsys.readouterr()
    # in this process (the test driver's state is this process's), without main()'s log setup
    args = parser().parse_args(["plan", "--connect", TEST_URI, "--config-dir", str(bdirs["config"]),
                                "--state-dir", str(bdirs["state"])])
    code = await asyncio.to_thread(cmd_plan, args)
    out = capsys.readouterr().out
    assert "domain prodvm: nothing to do [foreign]  (belongs to nvirtd instance 'default'; left alone)" in out
    assert "undefine" not in out and code == 0


async def test_objects_written_before_instances_upgrade_without_a_change(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"old": domain(), "slow": domain(shutdownTimeout=600)}})
    d = await start_daemon(settings)
    for name in ("old", "slow"):  # what an nvirtd before instances wrote: no instance, no timeout
        dom = fresh_libvirt.lookupByName(name)
        owner = parse_owner(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        legacy = dataclasses.replace(owner, instance=None, shutdown_timeout=None)
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, owner_xml(legacy), PREFIX, NAMESPACE,
                        libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    d.daemon.stop()
    await d.task
    upgraded = await start_daemon(settings)
    # no lifecycle change, no redefine; only the domain whose timeout was not the default
    # gets its owner element updated, metadata only
    assert dict(upgraded.hv.mutations) == {"set_owner": 1}
    owner = parse_owner(fresh_libvirt.lookupByName("slow").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert owner.shutdown_timeout == 600 and owner.instance == "default"
    assert all(fresh_libvirt.lookupByName(n).isActive() == 1 for n in ("old", "slow"))
    # a restart after the upgrade costs nothing
    upgraded.daemon.stop()
    await upgraded.task
    again = await start_daemon(settings)
    assert again.hv.mutation_count == 0


async def test_two_daemons_on_one_state_dir_refuse_naming_the_first(dirs, settings, start_daemon):
    write_json(dirs["config"] / "a.json", {"domains": {}})
    await start_daemon(settings)
    with pytest.raises(StateDirLocked, match=r"nvirtd \(pid \d+\) is already running with state directory"):
        await Daemon(settings).run()


def test_default_instance_is_the_services_only_on_etc_nvirt_d():
    assert default_instance("/etc/nvirt.d") == "default"
    assert default_instance("/etc/nvirt.d/") == "default"
    trial = default_instance("./try.json")
    assert trial.startswith("try-") and trial != default_instance("/tmp/try.json")
