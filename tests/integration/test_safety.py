"""The safety promises on the real libvirtd, reproduced as they were broken from outside:

- a `run --once` trial on another config directory, with no flag at all, leaves the
  service's VMs alone;
- libvirtd hung (SIGSTOP): status says so, the log says it once, SIGTERM still ends
  nvirtd within seconds and the VMs keep running;
- a domain removed while nvirtd is down gets its own shutdownTimeout, and a restart
  of nvirtd does not start the clock again.
Domains boot no OS: they ignore ACPI, so a graceful shutdown always runs to its timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import libvirt
import pytest

from daemon.core.ownership import NAMESPACE, parse_owner, parse_owner_element
from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.conftest import SYSTEM_URI, qemu_pids

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def running(conn, name) -> bool:
    try:
        return conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False


async def test_a_run_once_trial_never_touches_the_services_vms(dirs, system_settings, start_daemon, system_conn,
                                                                tmp_path):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-prod": domain()}})
    await start_daemon(system_settings)  # the service: the default instance
    await wait_for(lambda: running(system_conn, "nvt-prod"), 60, "prod running")
    pids = qemu_pids("nvt-prod")
    trial = tmp_path / "try"
    trial.mkdir(mode=0o755)
    write_json(trial / "try.json", {"domains": {"nvt-demo": domain()}})
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "daemon", "run", "--once", "--connect", SYSTEM_URI, "--config-dir",
        str(trial / "try.json"), "--state-dir", str(tmp_path / "try-state"), "--images-dir", system_settings.images_dir],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert running(system_conn, "nvt-prod") and qemu_pids("nvt-prod") == pids
    assert running(system_conn, "nvt-demo")
    owner = parse_owner(system_conn.lookupByName("nvt-demo").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert owner.instance.startswith("try-") and owner.instance != "default"


def test_hung_libvirtd_is_reported_once_and_sigterm_still_exits_fast(dirs, system_cleanup, tmp_path):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-hang": domain()}})
    log = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--connect", SYSTEM_URI, "--config-dir",
                             str(dirs["config"]), "--state-dir", str(dirs["state"]), "--images-dir",
                             str(dirs["images"]), "--no-watch"], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    libvirtd = int(open("/run/libvirtd.pid").read())
    status_file = dirs["state"] / "status.json"

    def status():
        try:
            return json.loads(status_file.read_text())
        except (OSError, ValueError):
            return {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "1 running" not in status().get("summary", ""):
            time.sleep(0.1)
        assert "1 running" in status().get("summary", ""), status()
        os.kill(libvirtd, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 45  # libvirt's keepalive: 5 s, then 3 missed answers
            while time.monotonic() < deadline and status().get("libvirt", {}).get("state") != "unreachable":
                time.sleep(0.2)
            shown = subprocess.run([sys.executable, "-m", "daemon", "status", "--state-dir", str(dirs["state"])],
                                   capture_output=True, text=True, timeout=30).stdout
            assert f"libvirt at {SYSTEM_URI} unreachable since" in shown, shown
            time.sleep(3)  # retries go on meanwhile
            assert log.read_text().count("libvirt_connection_lost") == 1
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            proc.wait(timeout=20)
            assert time.monotonic() - sent < 5, "SIGTERM took too long while libvirtd hung"
        finally:
            os.kill(libvirtd, signal.SIGCONT)
        conn = libvirt.open(SYSTEM_URI)
        try:
            assert running(conn, "nvt-hang"), "stopping nvirtd stopped a VM"
        finally:
            conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def live_owner(conn, name):
    dom = conn.lookupByName(name)
    return parse_owner_element(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE,
                                            libvirt.VIR_DOMAIN_AFFECT_LIVE))


async def test_removal_while_down_keeps_its_timeout_and_its_clock(dirs, system_settings, start_daemon, system_conn):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-quick": domain(shutdownTimeout=6),
                                                       "nvt-slow": domain(shutdownTimeout=600)}})
    first = await start_daemon(system_settings)
    await wait_for(lambda: running(system_conn, "nvt-quick") and running(system_conn, "nvt-slow"), 60, "running")
    first.daemon.stop()
    await first.task
    os.unlink(dirs["config"] / "a.json")  # removed while nvirtd is down
    second = await start_daemon(dataclasses.replace(system_settings))
    await wait_for(lambda: live_owner(system_conn, "nvt-slow").shutdown_started is not None, 10, "shutdown begun")
    began = live_owner(system_conn, "nvt-slow").shutdown_started
    second.daemon.stop()
    await second.task
    third = await start_daemon(system_settings)  # the clock goes on, it does not start again
    # nvt-quick: its own 6 s, counted from the first attempt (not 120 s, not from each restart)
    await wait_for(lambda: "nvt-quick" not in [d.name() for d in system_conn.listAllDomains()], 30, "quick removed")
    assert time.time() - began < 20
    await asyncio.sleep(2)
    assert running(system_conn, "nvt-slow"), "a 600 s shutdownTimeout was cut short"
    assert live_owner(system_conn, "nvt-slow").shutdown_started == pytest.approx(began, abs=0.01)
    third.daemon.stop()
    await third.task
