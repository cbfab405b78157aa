"""`nvirtd purge` never deletes the disk of a name that may still be declared, and a
config directory that is a symlink (NixOS' /etc/nvirt.d) is watched through it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys

from daemon.adapters.images import Images
from tests.conftest import domain, write_json


def purge(dirs, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", "purge", "qa-p1", "--connect", "test:///default",
                           "--config-dir", str(dirs["config"]), "--state-dir", str(dirs["state"]), *extra],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


async def test_purge_refuses_a_name_a_broken_file_declared(dirs, settings, start_daemon, fresh_libvirt):
    overlay = dirs["images"] / "qa-p1-root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), "16M"], check=True)
    Images(state_dir=str(dirs["state"]))._record(str(overlay), backing="", domain="qa-p1", disk="root")
    write_json(dirs["config"] / "p1.json", {"domains": {"qa-p1": domain()}})
    d = await start_daemon(settings)
    assert "declared in p1.json" in (await asyncio.to_thread(purge, dirs, "--yes")).stderr
    # the file breaks: the daemon holds qa-p1 at its last good state
    (dirs["config"] / "p1.json").write_text('{"domains": {"qa-p1": ')
    await d.reload()
    assert "held" in d.entry("qa-p1").conditions
    fresh_libvirt.lookupByName("qa-p1").destroy()
    fresh_libvirt.lookupByName("qa-p1").undefine()  # undefined by hand
    refused = await asyncio.to_thread(purge, dirs, "--yes")
    assert refused.returncode == 1 and overlay.exists()
    assert "p1.json is broken and may declare it" in refused.stderr
    assert "declared in the running daemon's last good config" in refused.stderr
    # even a file that spells the name with escapes counts
    (dirs["config"] / "p1.json").write_text('{"domains": {"qa\\u002dp1": ')
    (dirs["state"] / "declared.json").unlink()
    assert (await asyncio.to_thread(purge, dirs, "--yes")).returncode == 1 and overlay.exists()
    # no file declares it any more: purge lists, then deletes
    os.unlink(dirs["config"] / "p1.json")
    await d.reload()
    listed = await asyncio.to_thread(purge, dirs)
    assert listed.returncode == 0 and f"  {overlay}" in listed.stdout and "--yes" in listed.stdout
    assert overlay.exists()
    done = await asyncio.to_thread(purge, dirs, "--yes")
    assert done.returncode == 0 and f"deleted {overlay}" in done.stdout and not overlay.exists()
    assert done.stdout.index("deletes these files") < done.stdout.index("deleted ")


async def test_a_symlinked_config_directory_is_watched_and_followed(tmp_path, dirs, settings, start_daemon,
                                                                   fresh_libvirt):
    gen1, gen2 = tmp_path / "gen1" / "nvirt.d", tmp_path / "gen2" / "nvirt.d"
    for g in (gen1, gen2):
        g.mkdir(parents=True)
        for p in (g, g.parent):
            p.chmod(0o755)
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    (etc / "static").symlink_to("../gen1")
    (etc / "nvirt.d").symlink_to("static/nvirt.d")  # as NixOS' environment.etc does
    write_json(gen1 / "a.json", {"domains": {"one": domain()}})
    d = await start_daemon(dataclasses.replace(settings, config_dir=str(etc / "nvirt.d"), watch=True))
    assert fresh_libvirt.lookupByName("one").isActive() == 1

    async def until(name: str) -> None:
        for _ in range(200):
            if name in {dom.name() for dom in fresh_libvirt.listAllDomains()}:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"{name} never appeared: the save was not noticed")
    write_json(gen1 / "b.json", {"domains": {"one": domain(), "two": domain()}})  # a save, no SIGHUP
    await until("two")
    write_json(gen2 / "a.json", {"domains": {"three": domain()}})
    (etc / "static.new").symlink_to("../gen2")
    os.replace(etc / "static.new", etc / "static")  # a new generation
    await until("three")
    write_json(gen2 / "c.json", {"domains": {"four": domain()}})  # and the new directory is watched
    await until("four")
    assert not d.task.done()
