"""A saved file is picked up by itself, whichever way the editor saves it.

In-process daemon on the test driver, watching its config directory with the
real watchdog (inotify) observer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace

import libvirt
import pytest

from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for

SAVES = 20


def content(i: int) -> str:
    return json.dumps({"domains": {"web": domain(128 + i)}}, indent=2)


def save_in_place(path, i):
    with open(path, "w") as fh:
        fh.write(content(i))


def save_temp_and_rename(path, i):
    tmp = path.with_name(f".{path.name}.{i}.tmp")
    tmp.write_text(content(i))
    tmp.chmod(0o644)
    os.replace(tmp, path)


def save_unlink_and_create(path, i):
    path.unlink()
    save_in_place(path, i)


def save_sed_in_place(path, i):
    subprocess.run(["sed", "-i", f's/"amount": {128 + i - 1}/"amount": {128 + i}/', str(path)], check=True)


def save_vim_with_backup(path, i):
    probe = path.with_name("4913")  # vim checks it may create files in the directory
    probe.write_text("")
    probe.unlink()
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    save_in_place(path, i)
    backup.unlink()


def save_vim_without_backup(path, i):
    probe = path.with_name("4913")
    probe.write_text("")
    probe.unlink()
    with open(path, "r+") as fh:
        fh.truncate(0)
        fh.write(content(i))


METHODS = [save_in_place, save_temp_and_rename, save_unlink_and_create, save_sed_in_place,
           save_vim_with_backup, save_vim_without_backup]


def memory_kib(conn) -> int:
    xml = conn.lookupByName("web").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return int(ET.fromstring(xml).findtext("memory"))


@pytest.mark.slow
@pytest.mark.parametrize("save", METHODS, ids=lambda f: f.__name__.removeprefix("save_"))
async def test_every_save_is_applied_once(save, dirs, settings, start_daemon, fresh_libvirt):
    path = dirs["config"] / "web.json"
    path.write_text(content(0))
    path.chmod(0o644)
    d = await start_daemon(replace(settings, watch=True, debounce=0.03))
    defines_before = d.hv.mutations["define_domain"]
    reloads_before = d.daemon.status.reload["generation"]
    errors_seen: list[str] = []
    for i in range(1, SAVES + 1):
        save(path, i)
        await wait_for(lambda: memory_kib(fresh_libvirt) == (128 + i) * 1024, 2, f"save {i} applied")
        errors_seen += d.daemon.status.config_errors
        await asyncio.sleep(0.05)
    await d.settle()
    assert d.hv.mutations["define_domain"] - defines_before == SAVES
    assert d.daemon.status.reload["generation"] - reloads_before == SAVES
    assert errors_seen == []


async def test_bad_save_keeps_last_good_and_fix_is_picked_up(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "web.json", {"domains": {"web": domain(128)}})
    write_json(dirs["config"] / "db.json", {"domains": {"db": domain(128)}})
    d = await start_daemon(replace(settings, watch=True, debounce=0.03))
    (dirs["config"] / "web.json").write_text('{"domains": {"web": {"memory": {"amount": "lots"}}}}')
    await wait_for(lambda: d.daemon.status.config_errors, 2, "error reported")
    assert "web.json: domains.web.memory.amount: expected an integer" in d.daemon.status.config_errors[0]
    write_json(dirs["config"] / "db.json", {"domains": {"db": domain(256)}})
    await wait_for(lambda: int(ET.fromstring(fresh_libvirt.lookupByName("db").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE)).findtext("memory")) == 256 * 1024, 2, "db applied")
    assert memory_kib(fresh_libvirt) == 128 * 1024
    write_json(dirs["config"] / "web.json", {"domains": {"web": domain(192)}})
    await wait_for(lambda: memory_kib(fresh_libvirt) == 192 * 1024, 2, "fix applied")
    assert d.daemon.status.config_errors == []


async def test_removed_directory_is_reported_and_watched_again_when_it_returns(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "web.json", {"domains": {"web": domain()}})
    d = await start_daemon(replace(settings, watch=True, debounce=0.03))
    shutil.rmtree(dirs["config"])
    await wait_for(lambda: any("does not exist" in e for e in d.daemon.status.config_errors), 2, "reported")
    assert fresh_libvirt.lookupByName("web").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    dirs["config"].mkdir(mode=0o755)
    await asyncio.sleep(0.2)
    write_json(dirs["config"] / "web.json", {"domains": {"web": domain(), "db": domain()}})
    await wait_for(lambda: "db" in [x.name() for x in fresh_libvirt.listAllDomains()], 3, "new dir watched")
    assert d.daemon.status.config_errors == []


async def test_editor_leftovers_do_not_trigger_reloads(dirs, settings, start_daemon):
    write_json(dirs["config"] / "web.json", {"domains": {"web": domain()}})
    d = await start_daemon(replace(settings, watch=True, debounce=0.03))
    generation = d.daemon.status.reload["generation"]
    for junk in ("web.json~", ".web.json.swp", "web.json.bak", "web.json.dpkg-new", "notes.txt"):
        (dirs["config"] / junk).write_text("{")
    await asyncio.sleep(0.3)
    assert d.daemon.status.reload["generation"] == generation


async def test_a_saved_cloud_init_file_is_picked_up_too(dirs, settings, start_daemon, fresh_libvirt):
    """The file a domain's cloudInit names is watched with the config: saving it rewrites the seed."""
    from tests.engine.test_cloud_images import iso_files, seed_of
    part = dirs["config"] / "web.user-data"
    part.write_text("#cloud-config\nhostname: one\n")
    part.chmod(0o644)
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(cloudInit={"userDataFile": "web.user-data"})}})
    d = await start_daemon(replace(settings, watch=True, debounce=0.03))
    first = seed_of(fresh_libvirt, "web")
    part.write_text("#cloud-config\nhostname: two\n")
    await wait_for(lambda: seed_of(fresh_libvirt, "web") != first, 5, "the seed rewritten")
    assert iso_files(seed_of(fresh_libvirt, "web"))["user-data"].endswith("two\n")
    assert d.daemon.status.config_errors == []
