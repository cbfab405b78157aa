"""Backups that restore, on the real libvirtd: the TCG guest writes a mark, is backed up
while it runs (libvirt push backup), overwrites the mark, and after `nvirtd restore`
boots from the restored overlay and reads the mark again. The backup is self-contained
(no backing file); the overwritten overlay is kept aside, never deleted."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from daemon.status import render_table
from tests.adapters.test_images import nix_config
from tests.conftest import REPO, domain, have, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.conftest import SYSTEM_URI, fill, stopped_on_overlay
from tests.integration.test_boot_and_network import booting, console
from tests.integration.test_system_libvirtd import running

pytestmark = [pytest.mark.integration, pytest.mark.nix, pytest.mark.slow,
              pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]


def nvirtd(settings, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "daemon", *args, "-c", SYSTEM_URI, "--instance", settings.instance,
            "--config-dir", settings.config_dir, "--state-dir", settings.state_dir]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=180)


def first_line(image: str, tmp_path) -> bytes:
    out = tmp_path / "head"
    subprocess.run(["qemu-img", "dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512", "count=1", f"if={image}",
                    f"of={out}"], check=True, capture_output=True)
    return out.read_bytes().split(b"\n")[0]


async def test_a_running_vm_is_backed_up_and_restored_with_its_data(dirs, nix_settings, start_daemon,
                                                                    system_conn, guest, tmp_path):
    disks = {"root": {"type": "nix", "path": nix_config(tmp_path, "bk")}}
    writes = booting(guest, "nvirtd.disk nvirtd.write=BACKMEUP nvirtd.wait", disks=disks, restartOnChange=True)
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-bk": writes}})
    d = await start_daemon(nix_settings)
    await wait_for(lambda: "NVIRTD-DISK-DATA BACKMEUP" in console(dirs["state"], "nvt-bk"), 120, "the mark")
    target = str(tmp_path / "backups")

    done = nvirtd(nix_settings, "backup", "nvt-bk", "--to", target)
    assert done.returncode == 0, done.stderr
    assert "crash-consistent" in done.stdout and "backing up nvt-bk: 100%" in done.stdout
    [backup] = glob.glob(f"{target}/nvt-bk/*Z")
    manifest = json.loads(open(f"{backup}/manifest.json").read())
    assert manifest["domain"] == "nvt-bk" and manifest["self_contained"] and list(manifest["disks"]) == ["vda"]
    info = subprocess.run(["qemu-img", "info", f"{backup}/vda.qcow2"], capture_output=True, text=True).stdout
    assert "backing file" not in info  # flattened: restores where the base never was
    assert first_line(f"{backup}/vda.qcow2", tmp_path) == b"BACKMEUP"

    # the guest overwrites its mark, then is to boot without writing
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-bk": booting(
        guest, "nvirtd.disk nvirtd.write=OTHER nvirtd.wait", disks=disks, restartOnChange=True)}})
    await d.reload()
    await wait_for(lambda: "NVIRTD-DISK-WROTE OTHER" in console(dirs["state"], "nvt-bk"), 120, "OTHER written")
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-bk": booting(guest, "nvirtd.disk nvirtd.wait",
                                                                          disks=disks)}})
    await d.reload()
    overlay = f"{nix_settings.images_dir}/nvt-bk-root.qcow2"

    refused = nvirtd(nix_settings, "restore", "nvt-bk", "--from", backup)
    assert refused.returncode == 1 and "pass --stop" in refused.stderr and running(system_conn, "nvt-bk")
    restored = nvirtd(nix_settings, "restore", "nvt-bk", "--from", backup, "--stop")
    assert restored.returncode == 0, restored.stderr
    assert "on its base /nix/store/" in restored.stdout  # thin again: only what differs from the base
    [kept] = glob.glob(f"{overlay}.restored-*")
    assert first_line(kept, tmp_path) == b"OTHER" and first_line(overlay, tmp_path) == b"BACKMEUP"
    base = subprocess.run(["qemu-img", "info", "-U", overlay], capture_output=True, text=True).stdout
    assert "backing file: /nix/store/" in base
    await wait_for(lambda: console(dirs["state"], "nvt-bk").rstrip().endswith("NVIRTD-DISK-DATA BACKMEUP"), 120,
                   "the guest to boot from the restored disk and read its mark")
    await d.settle()
    assert d.entry("nvt-bk").phase == "running"


async def test_bad_backup_and_restore_input_changes_nothing(dirs, nix_settings, start_daemon, system_conn,
                                                            tmp_path):
    disks = {"root": {"type": "nix", "path": nix_config(tmp_path, "bkbad")}}
    d, overlay = await stopped_on_overlay(start_daemon, nix_settings, dirs["config"], "nvt-bkbad",
                                          domain(96, virtType="qemu", disks=disks))
    fill(overlay, 0x5a)
    calls = d.hv.mutation_count

    unwritable = nvirtd(nix_settings, "backup", "nvt-bkbad", "--to", "/proc/nvirtd-backups")
    assert unwritable.returncode == 1 and "cannot write backups to /proc/nvirtd-backups" in unwritable.stderr
    target = str(tmp_path / "b")
    done = nvirtd(nix_settings, "backup", "nvt-bkbad", "--to", target)
    assert done.returncode == 0 and "clean (the VM was stopped)" in done.stdout, done.stderr
    [backup] = glob.glob(f"{target}/nvt-bkbad/*Z")

    other = tmp_path / "other"
    shutil.copytree(backup, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "domain": "nvt-elsewhere"}))
    wrong_vm = nvirtd(nix_settings, "restore", "nvt-bkbad", "--from", str(other))
    assert wrong_vm.returncode == 1 and "is a backup of 'nvt-elsewhere', not of 'nvt-bkbad'" in wrong_vm.stderr

    (other / "manifest.json").write_text(json.dumps(manifest))
    with open(other / "vda.qcow2", "r+b") as f:  # one flipped byte in the copy
        f.seek(os.path.getsize(other / "vda.qcow2") - 1)
        last = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([last[0] ^ 0xFF]))
    corrupt = nvirtd(nix_settings, "restore", "nvt-bkbad", "--from", str(other))
    assert corrupt.returncode == 1 and "does not match its checksum" in corrupt.stderr
    assert not glob.glob(f"{overlay}.*")  # nothing kept aside, nothing half-made: nothing changed
    await d.settle()
    assert d.hv.mutation_count == calls and not running(system_conn, "nvt-bkbad")


def old_backup(folder, stamp: str) -> str:
    """A whole backup of the past (as `nvirtd backup` leaves one): a folder with a manifest."""
    path = os.path.join(folder, stamp)
    os.makedirs(path)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump({"format": 1, "domain": os.path.basename(folder), "created": stamp, "disks": {}}, f)
    return path


async def test_a_scheduled_backup_missed_while_off_runs_at_start_and_keeps_the_newest(dirs, nix_settings,
                                                                                     start_daemon, system_conn,
                                                                                     tmp_path):
    to = str(tmp_path / "scheduled")
    old = [old_backup(f"{to}/nvt-sched", s) for s in ("20261120T010000Z", "20261121T010000Z", "20261122T010000Z")]
    os.makedirs(f"{to}/nvt-sched/20261123T010000Z.partial")  # a failed one: never counts, never kept as good
    disks = {"root": {"type": "nix", "path": nix_config(tmp_path, "sched")}}
    spec = domain(96, virtType="qemu", shutdownTimeout=1, disks=disks, backup={"every": "daily", "keep": 2, "to": to})
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-sched": spec}})
    d = await start_daemon(nix_settings)
    await wait_for(lambda: (d.daemon.status.daemon.get("backups", {}).get("nvt-sched") or {}).get("phase") == "done",
                   60, "the missed daily backup to run at start-up")
    state = d.daemon.status.daemon["backups"]["nvt-sched"]
    whole = sorted(p for p in os.listdir(f"{to}/nvt-sched") if not p.endswith(".partial"))
    assert len(whole) == 2 and whole[0] == "20261122T010000Z"  # keep 2: the new one and the newest old one
    assert not os.path.exists(old[0]) and not os.path.exists(old[1])
    assert state["last"] == f"{to}/nvt-sched/{whole[1]}" and state["kept"] == 2 and "crash-consistent" in \
        state["consistency"]
    assert os.path.exists(f"{state['last']}/vda.qcow2") and running(system_conn, "nvt-sched")
    await wait_for(lambda: "nvt-sched" in json.loads((dirs["state"] / "status.json").read_text())["daemon"].get(
        "backups", {}), 5, "status.json, which `nvirtd status` reads, to show the backup")
    calls = d.hv.mutation_count
    await d.reload()  # the schedule is no part of the definition: no redefine
    assert d.hv.mutation_count == calls

    # a target that cannot be written: failed, in the status, retried with backoff; nothing else changes
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-sched2": {**spec, "backup": {
        "every": "hourly", "to": "/proc/nvirtd-backups"}}, "nvt-sched": spec}})
    await d.reload()
    await wait_for(lambda: (d.daemon.status.daemon["backups"].get("nvt-sched2") or {}).get("phase") == "failed",
                   10, "the backup to fail")
    failed = d.daemon.status.daemon["backups"]["nvt-sched2"]
    assert "cannot write backups to /proc/nvirtd-backups" in failed["error"] and failed["retry_in"] >= 1
    table = render_table({"summary": "-", "daemon": d.daemon.status.daemon})
    assert "nvt-sched2             failed (retry in" in table and "nvt-sched              last " in table
    assert d.daemon.status.daemon["backups"]["nvt-sched"]["phase"] == "done" and running(system_conn, "nvt-sched")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB filesystem of its own (tmpfs), to fill up."""
    path = tmp_path / "small"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield str(path)
    subprocess.run(["umount", str(path)], check=False)


async def test_a_backup_that_fills_its_disk_fails_clearly_and_leaves_nothing(dirs, nix_settings, start_daemon,
                                                                            system_conn, tmp_path, small_disk):
    disks = {"root": {"type": "nix", "path": nix_config(tmp_path, "bkfull")}}
    d, overlay = await stopped_on_overlay(start_daemon, nix_settings, dirs["config"], "nvt-bkfull",
                                          domain(96, virtType="qemu", disks=disks))
    fill(overlay, 0x5a, "2M")
    before = os.stat(overlay)

    full = nvirtd(nix_settings, "backup", "nvt-bkfull", "--to", small_disk)
    assert full.returncode == 1 and "nothing was kept of this backup" in full.stderr, full.stderr
    assert "No space left on device" in full.stderr
    assert os.listdir(f"{small_disk}/nvt-bkfull") == []  # no .partial left to look like a backup
    after = os.stat(overlay)
    assert (after.st_ino, after.st_size, after.st_mtime) == (before.st_ino, before.st_size, before.st_mtime)
