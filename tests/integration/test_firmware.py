"""UEFI with a TPM on the real libvirtd: NVRAM and TPM state outlive a redefine and an undefine."""

from __future__ import annotations

import glob
import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.test_system_libvirtd import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def nvram_of(conn, name: str) -> str:
    """libvirt 9.0 records the auto-selected firmware and NVRAM in the live definition only."""
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    return root.findtext("./os/nvram")


async def test_efi_tpm_domain_keeps_nvram_and_tpm_state(dirs, system_settings, start_daemon, system_conn):
    spec = domain(256, virtType="qemu", firmware="efi", tpm=True, shutdownTimeout=1)
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-efi": spec}})
    d = await start_daemon(system_settings)
    await wait_for(lambda: running(system_conn, "nvt-efi"), 60, "nvt-efi running")
    nvram = nvram_of(system_conn, "nvt-efi")
    assert nvram and os.path.exists(nvram), "libvirt made no per-domain NVRAM"
    uuid = system_conn.lookupByName("nvt-efi").UUIDString()
    tpm_state = glob.glob(f"/var/lib/libvirt/swtpm/{uuid}/tpm2/*")
    assert tpm_state, "no TPM state"
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-efi": {**spec, "cpu": {"amount": 2}}}})
    await d.reload()
    assert "restart-required" in d.entry("nvt-efi").conditions
    assert os.path.exists(nvram) and nvram_of(system_conn, "nvt-efi") == nvram  # a redefine keeps it
    (dirs["config"] / "a.json").unlink()
    await d.reload()
    await wait_for(lambda: "nvt-efi" not in [x.name() for x in system_conn.listAllDomains()], 30, "undefined")
    assert os.path.exists(nvram), "undefine must keep the NVRAM"
    assert glob.glob(f"/var/lib/libvirt/swtpm/{uuid}/tpm2/*"), "undefine must keep the TPM state"
    os.unlink(nvram)
    shutil.rmtree(f"/var/lib/libvirt/swtpm/{uuid}", ignore_errors=True)
