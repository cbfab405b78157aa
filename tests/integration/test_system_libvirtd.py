"""nvirtd against the real libvirtd with QEMU: define, run, remove, drift, reconnect, crash.

Domains here boot no OS (type kvm when libvirt offers it: they reach `running`,
which is all a lifecycle test needs); see test_boot_and_network.py for a real kernel under TCG.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import libvirt
import pytest

from daemon.core.ownership import parse_owner
from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.conftest import SYSTEM_URI, qcow2, qemu_pids, restart_libvirtd

pytestmark = pytest.mark.integration


def running(conn, name) -> bool:
    try:
        return conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False


def defined(conn) -> list[str]:
    return sorted(d.name() for d in conn.listAllDomains() if d.name().startswith("nvt-"))


async def test_json_file_to_running_domain_and_back(dirs, system_settings, start_daemon, system_conn):
    disk = qcow2(dirs["images"] / "nvt-web-data.qcow2")
    write_json(dirs["config"] / "web.json", {"domains": {"nvt-web": domain(
        128, shutdownTimeout=2, disks={"data": {"type": "file", "driver": {"type": "qcow2"}, "path": str(disk)}})}})
    d = await start_daemon(system_settings)
    await wait_for(lambda: running(system_conn, "nvt-web"), 60, "nvt-web running")
    dom = system_conn.lookupByName("nvt-web")
    assert dom.autostart() == 1
    assert parse_owner(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).file == "web.json"
    assert qemu_pids("nvt-web"), "no QEMU process for the domain"
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     capture_output=True, check=True).stdout)
    assert info["format"] == "qcow2"
    (dirs["config"] / "web.json").unlink()
    await d.reload()
    # no OS answers ACPI: after shutdownTimeout nvirtd destroys, then undefines
    await wait_for(lambda: "nvt-web" not in defined(system_conn), 30, "nvt-web undefined")
    assert disk.exists(), "the disk must outlive its domain"
    assert d.hv.mutations["shutdown"] >= 1 and d.hv.mutations["destroy"] == 1


async def test_unchanged_config_on_real_libvirtd_makes_no_calls_after_restart(dirs, system_settings, start_daemon, system_conn):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-a": domain(), "nvt-b": domain(state="stopped")}})
    first = await start_daemon(system_settings)
    await wait_for(lambda: running(system_conn, "nvt-a"), 60, "nvt-a running")
    first.daemon.stop()
    await first.task
    pids = qemu_pids("nvt-a")
    second = await start_daemon(system_settings)
    await second.settle()
    assert second.hv.mutation_count == 0, second.hv.mutations
    assert qemu_pids("nvt-a") == pids


async def test_virsh_destroy_and_edit_are_repaired(dirs, system_settings, start_daemon, system_conn):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-drift": domain()}})
    await start_daemon(system_settings)
    await wait_for(lambda: running(system_conn, "nvt-drift"), 60, "running")
    subprocess.run(["virsh", "-c", SYSTEM_URI, "destroy", "nvt-drift"], check=True, capture_output=True)
    await wait_for(lambda: running(system_conn, "nvt-drift"), 30, "restarted after virsh destroy")
    pids = qemu_pids("nvt-drift")
    xml = system_conn.lookupByName("nvt-drift").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    system_conn.defineXML(xml.replace("<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>"))
    await wait_for(lambda: "<vcpu placement='static'>1</vcpu>" in system_conn.lookupByName("nvt-drift").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE), 10, "edit reverted")
    assert qemu_pids("nvt-drift") == pids  # reverted for the next boot, not restarted


@pytest.mark.slow
async def test_libvirtd_restart_reconnects_resyncs_and_leaves_vms_running(dirs, system_settings, start_daemon, system_conn):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-rc": domain()}})
    d = await start_daemon(system_settings)
    await wait_for(lambda: running(system_conn, "nvt-rc"), 60, "running")
    pids = qemu_pids("nvt-rc")
    starts = d.hv.mutations["start"]
    connects = d.daemon.link.connects
    await asyncio.to_thread(restart_libvirtd)
    # it may notice and reconnect before the restart script even returns: count reconnects
    await wait_for(lambda: d.daemon.link.connects > connects and d.daemon.link.up, 30, "reconnected")
    assert d.daemon.status.libvirt["state"] == "connected"
    await d.settle(30)
    assert qemu_pids("nvt-rc") == pids and d.hv.mutations["start"] == starts
    # callbacks were registered again: drift after the restart is still repaired
    conn = libvirt.open(SYSTEM_URI)
    try:
        conn.lookupByName("nvt-rc").destroy()
        await wait_for(lambda: running(conn, "nvt-rc"), 30, "repaired after reconnect")
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_mid_reconcile_then_restart_converges_without_loss(dirs, system_settings, tmp_path, system_cleanup):
    names = [f"nvt-k{i}" for i in range(8)]
    disks = {n: qcow2(dirs["images"] / f"{n}.qcow2") for n in names}
    for n, path in disks.items():
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(path)], check=True,
                       capture_output=True)
    write_json(dirs["config"] / "a.json", {"domains": {n: domain(
        96, disks={"d": {"type": "file", "driver": {"type": "qcow2"}, "path": str(p)}}) for n, p in disks.items()}})
    argv = [sys.executable, "-m", "daemon", "run", "--connect", SYSTEM_URI, "--config-dir", str(dirs["config"]),
            "--state-dir", str(dirs["state"]), "--images-dir", system_settings.images_dir, "--no-watch"]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(argv, stderr=log, stdout=log)
    conn = libvirt.open(SYSTEM_URI)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(n in [d.name() for d in conn.listAllDomains()] for n in names):
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # in the middle of the first pass
        first.wait()
        partial = [n for n in names if n in [d.name() for d in conn.listAllDomains()]]
        assert partial, "the kill came before anything was defined"
        second = subprocess.Popen(argv + ["--once"], stderr=open(tmp_path / "second.log", "w"),
                                  stdout=subprocess.PIPE, text=True)
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out + (tmp_path / "second.log").read_text()[-3000:]
        for n in names:
            dom = conn.lookupByName(n)
            assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
            owner = parse_owner(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            assert owner is not None and owner.fingerprint
        assert len([d for d in conn.listAllDomains() if d.name() in names]) == len(names)
        for path in disks.values():
            check = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", str(path)],
                                   capture_output=True, text=True)
            assert check.returncode == 0 and "Pattern verification failed" not in check.stdout
    finally:
        conn.close()
