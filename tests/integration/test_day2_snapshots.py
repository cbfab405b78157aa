"""Snapshots on the real libvirtd: internal snapshots inside the nix overlays, taken of a
stopped VM (disks) and of a running TCG guest (disks and memory), reverted and deleted
with `nvirtd snapshot`; the daemon sees no drift from a snapshot."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from daemon.adapters.images import Images
from tests.adapters.test_images import nix_config
from tests.conftest import REPO, domain, have, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.conftest import SYSTEM_URI, fill, stopped_on_overlay
from tests.integration.test_boot_and_network import booting, console
from tests.integration.test_system_libvirtd import running

pytestmark = [pytest.mark.integration, pytest.mark.nix, pytest.mark.slow,
              pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]


def snapshot(settings, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "daemon", "snapshot", "-c", SYSTEM_URI, "--instance", settings.instance,
            "--config-dir", settings.config_dir, *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)


def holds(overlay: str, pattern: int) -> bool:
    """Whether the first 64 KiB the guest would read are all `pattern`."""
    out = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern:#x} 0 64k", overlay],
                         capture_output=True, text=True)
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout + out.stderr


async def test_a_stopped_vms_snapshot_reverts_its_disk_and_is_no_drift(dirs, nix_settings, start_daemon,
                                                                      system_conn, tmp_path):
    cfg = nix_config(tmp_path, "snap")
    d, overlay = await stopped_on_overlay(start_daemon, nix_settings, dirs["config"], "nvt-snap", domain(
        96, virtType="qemu", disks={"root": {"type": "nix", "path": cfg}}))
    fill(overlay, 0x11)

    taken = snapshot(nix_settings, "nvt-snap", "--name", "before")
    assert taken.returncode == 0, taken.stderr
    assert "snapshot before of nvt-snap taken" in taken.stdout
    calls = d.hv.mutation_count
    await d.reload()  # a snapshot changes neither the definition nor the chain: nothing to repair
    assert d.hv.mutation_count == calls and d.entry("nvt-snap").phase == "stopped"

    fill(overlay, 0x22)
    assert holds(overlay, 0x22)
    listed = snapshot(nix_settings, "nvt-snap", "--list")
    assert "before" in listed.stdout and "taken while shutoff" in listed.stdout
    reverted = snapshot(nix_settings, "nvt-snap", "--revert", "before")
    assert reverted.returncode == 0, reverted.stderr
    assert holds(overlay, 0x11)
    assert os.path.exists(overlay) and "backing file: /nix/store/" in subprocess.run(
        ["qemu-img", "info", "-U", overlay], capture_output=True, text=True).stdout  # the same overlay, same base

    for bad, says in ((["--name", "../x"], "is not a valid name"), (["--name", "a/b"], "is not a valid name"),
                      (["--revert", "nope"], "has no snapshot 'nope' (it has: before)")):
        out = snapshot(nix_settings, "nvt-snap", *bad)
        assert out.returncode == 1 and says in out.stderr, out.stderr
    assert holds(overlay, 0x11)
    assert await Images.snapshots_in(overlay) == ["before"]  # what `nvirtd purge` lists
    deleted = snapshot(nix_settings, "nvt-snap", "--delete", "before")
    assert deleted.returncode == 0 and "has no snapshots" in snapshot(nix_settings, "nvt-snap", "--list").stdout
    other = snapshot(replace(nix_settings, instance="someone-else"), "nvt-snap", "--name", "x")
    assert other.returncode == 1 and "only this instance's domains" in other.stderr


async def test_a_running_guest_reverts_to_its_snapshot_with_stop(dirs, nix_settings, start_daemon, system_conn,
                                                                 guest, tmp_path):
    cfg = nix_config(tmp_path, "snaprun")
    disks = {"root": {"type": "nix", "path": cfg}}
    first = booting(guest, "nvirtd.disk nvirtd.write=FIRST nvirtd.wait", disks=disks)
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-snaprun": first}})
    d = await start_daemon(nix_settings)
    await wait_for(lambda: "NVIRTD-DISK-DATA FIRST" in console(dirs["state"], "nvt-snaprun"), 120, "FIRST written")
    taken = snapshot(nix_settings, "nvt-snaprun", "--name", "first")
    assert taken.returncode == 0 and "disks and memory" in taken.stdout, taken.stderr
    assert running(system_conn, "nvt-snaprun")

    # the VM is stopped, then boots a definition that writes SECOND
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-snaprun": {**first, "state": "stopped"}}})
    await d.reload()
    await wait_for(lambda: not running(system_conn, "nvt-snaprun"), 30, "stopped")
    second = booting(guest, "nvirtd.disk nvirtd.write=SECOND nvirtd.wait", disks=disks)
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-snaprun": second}})
    await d.reload()
    await wait_for(lambda: "NVIRTD-DISK-WROTE SECOND" in console(dirs["state"], "nvt-snaprun"), 120, "SECOND")

    refused = snapshot(nix_settings, "nvt-snaprun", "--revert", "first")
    assert refused.returncode == 1 and "pass --stop" in refused.stderr
    reverted = snapshot(nix_settings, "nvt-snaprun", "--revert", "first", "--stop")
    assert reverted.returncode == 0, reverted.stderr
    overlay = f"{nix_settings.images_dir}/nvt-snaprun-root.qcow2"
    head = subprocess.run(["qemu-img", "dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512", "count=1",
                           f"if={overlay}", f"of={tmp_path / 'head'}"], capture_output=True)
    assert head.returncode == 0 and (tmp_path / "head").read_bytes().startswith(b"FIRST\n")
    await wait_for(lambda: running(system_conn, "nvt-snaprun"), 60, "running again (reverted, or restarted)")
