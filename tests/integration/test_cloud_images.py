"""Guests beyond NixOS on the real libvirtd: the TCG test guest (a Linux kernel) finds the
cloud-init seed nvirtd wrote, as cloud-init's NoCloud does (a CD-ROM labelled cidata, on
virtio-scsi: Debian's cloud kernel has no AHCI), and two guests on one base image each
write to their own overlay while the base stays as it was."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_json
from tests.engine.test_cloud_images import qcow2_base
from tests.engine.test_reconcile import wait_for
from tests.integration.test_boot_and_network import booting, console

pytestmark = pytest.mark.integration
USER_DATA = "#cloud-config\n# NVIRTD-MARK-7f3a\nruncmd: [echo hello]\n"


async def test_the_guest_reads_the_seeds_user_data(dirs, system_settings, start_daemon, guest):
    spec = booting(guest, "nvirtd.seed", cloudInit={"userData": USER_DATA})
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-seed": spec}})
    await start_daemon(system_settings)
    seen = lambda: console(dirs["state"], "nvt-seed")  # noqa: E731
    await wait_for(lambda: "NVIRTD-SEED-METADATA local-hostname: nvt-seed" in seen(), 120, "the seed read")
    text = seen()
    assert "NVIRTD-SEED-MISSING" not in text
    assert "NVIRTD-SEED-LABEL cidata\n" in text and "NVIRTD-SEED-FILES meta-data user-data" in text
    assert "NVIRTD-SEED-USERDATA # NVIRTD-MARK-7f3a" in text


async def test_two_guests_on_one_base_write_their_own_overlays(dirs, system_settings, start_daemon, guest,
                                                               tmp_path):
    base = Path(system_settings.images_dir).parent / "nvt-bases" / "nvt-base.qcow2"
    base.parent.mkdir(exist_ok=True)
    digest = qcow2_base(base, "BASE-LINE\n")
    disks = {"root": {"type": "image", "path": str(base)}}

    def config(running: str) -> dict:
        return {"domains": {
            "nvt-img-a": booting(guest, "nvirtd.disk nvirtd.write=FROMA", disks=disks,
                                 state="running" if running == "nvt-img-a" else "stopped"),
            "nvt-img-b": booting(guest, "nvirtd.disk", disks=disks, state="running" if running == "nvt-img-b" else "stopped"),
        }}
    write_json(dirs["config"] / "a.json", config("nvt-img-a"))  # a writes to its disk first
    d = await start_daemon(system_settings)
    await wait_for(lambda: "NVIRTD-DISK-DATA" in console(dirs["state"], "nvt-img-a"), 120, "a wrote its disk")
    write_json(dirs["config"] / "a.json", config("nvt-img-b"))  # then b reads its own
    await d.reload()
    await wait_for(lambda: "NVIRTD-DISK-DATA" in console(dirs["state"], "nvt-img-b"), 120, "b read its disk")
    assert "NVIRTD-DISK-WROTE FROMA" in console(dirs["state"], "nvt-img-a")
    assert "NVIRTD-DISK-DATA BASE-LINE" in console(dirs["state"], "nvt-img-b")  # a's write is in a's overlay only
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest  # the base: untouched
    for name in ("nvt-img-a", "nvt-img-b"):
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", f"{system_settings.images_dir}/{name}-root.qcow2"],
                              capture_output=True, text=True, check=True).stdout
        assert f'"backing-filename": "{base}"' in info
