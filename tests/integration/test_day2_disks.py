"""Day-2 data on the real libvirtd: a nix disk grows in place, live and offline, and is
never shrunk. The TCG test guest (scripts/make-test-guest) writes a mark to its disk and
reports the size it sees, also after a live resize."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from daemon.adapters.images import image_info
from tests.adapters.test_images import nix_config
from tests.conftest import domain, have, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.conftest import fill, stopped_on_overlay
from tests.integration.test_boot_and_network import booting, console
from tests.integration.test_system_libvirtd import running

pytestmark = [pytest.mark.integration, pytest.mark.nix, pytest.mark.slow,
              pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]
GIB = 2**30


def nix_disk(cfg: str, gib: int) -> dict:
    return {"root": {"type": "nix", "path": cfg, "nix": {"size": gib, "unit": "G"}}}


def first_mib_digest(overlay: str, tmp_path: Path) -> str:
    """What the guest sees at the start of its disk, read through the backing chain."""
    out = tmp_path / "head.raw"
    subprocess.run(["qemu-img", "dd", "-U", "-f", "qcow2", "-O", "raw", "bs=1M", "count=1",
                    f"if={overlay}", f"of={out}"], check=True, capture_output=True)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


async def test_a_running_guest_sees_its_disk_grow_and_keeps_its_data(dirs, nix_settings, start_daemon,
                                                                     system_conn, guest, tmp_path):
    cfg = nix_config(tmp_path, "grow")
    spec = booting(guest, "nvirtd.disk nvirtd.write=KEEPME nvirtd.wait", disks=nix_disk(cfg, 1))
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-grow": spec}})
    d = await start_daemon(nix_settings)
    await wait_for(lambda: "NVIRTD-DISK-SIZE 2097152" in console(dirs["state"], "nvt-grow"), 120, "1 GiB seen")
    overlay = f"{nix_settings.images_dir}/nvt-grow-root.qcow2"
    inode = os.stat(overlay).st_ino
    calls = dict(d.hv.mutations)

    write_json(dirs["config"] / "a.json", {"domains": {"nvt-grow": {**spec, "disks": nix_disk(cfg, 2)}}})
    await d.reload()
    await wait_for(lambda: "NVIRTD-DISK-SIZE 4194304\nNVIRTD-DISK-DATA KEEPME" in console(dirs["state"], "nvt-grow"),
                   60, "the guest to see 2 GiB without a restart, and its mark still there")
    assert console(dirs["state"], "nvt-grow").count("NVIRTD-GUEST-BOOTED") == 1
    assert os.stat(overlay).st_ino == inode and (await image_info(overlay)).virtual_size == 2 * GIB
    changed = {k: v - calls.get(k, 0) for k, v in d.hv.mutations.items() if v != calls.get(k, 0)}
    assert changed == {"resize_disk": 1}  # no redefine, no restart
    await d.settle()
    assert d.entry("nvt-grow").disks["root"]["virtual_size"] == 2 * GIB

    # lowering it is refused, names the field and both sizes, and changes nothing
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-grow": {**spec, "disks": nix_disk(cfg, 1)}}})
    before = d.hv.mutation_count
    await d.reload()
    entry = d.entry("nvt-grow")
    assert entry.phase == "error"
    assert "domains.nvt-grow.disks.root.nix.size: 1.0 GiB is smaller than the overlay's 2.0 GiB" in entry.error
    assert d.hv.mutation_count == before and running(system_conn, "nvt-grow")
    assert (await image_info(overlay)).virtual_size == 2 * GIB


async def test_a_stopped_domains_disk_grows_offline_in_place(dirs, nix_settings, start_daemon, system_conn,
                                                             tmp_path):
    cfg = nix_config(tmp_path, "grow-off")
    spec = domain(96, virtType="qemu", state="stopped", disks=nix_disk(cfg, 1))
    d, overlay = await stopped_on_overlay(start_daemon, nix_settings, dirs["config"], "nvt-grow-off", spec)
    fill(overlay, 0x5a, "512k")  # the VM's data
    digest, inode = first_mib_digest(overlay, tmp_path), os.stat(overlay).st_ino

    write_json(dirs["config"] / "a.json", {"domains": {"nvt-grow-off": {**spec, "disks": nix_disk(cfg, 3)}}})
    await d.reload()
    info = await image_info(overlay)
    assert info.virtual_size == 3 * GIB and info.backing and info.backing.startswith("/nix/store/")
    assert os.stat(overlay).st_ino == inode and first_mib_digest(overlay, tmp_path) == digest
    assert d.hv.mutations["resize_disk"] == 0 and not running(system_conn, "nvt-grow-off")
