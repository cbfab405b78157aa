"""Fixtures for tests against the real libvirtd (qemu:///system), started by .ci/run.

Objects these tests create are named nvt-*; they are destroyed and undefined
after each test, whatever happened, so a failed test leaves nothing running.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from daemon.adapters.hypervisor import register_event_loop

SYSTEM_URI = "qemu:///system"
PREFIX = "nvt-"


def _remove_domain(dom) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def cleanup(conn) -> None:
    doms = [d for d in conn.listAllDomains() if d.name().startswith(PREFIX)]
    with ThreadPoolExecutor(8) as pool:  # a destroy takes a second or two: do them together
        list(pool.map(_remove_domain, doms))
    for net in conn.listAllNetworks():
        if net.name().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                net.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                net.undefine()


@pytest.fixture
def system_cleanup():
    """For tests that drive nvirtd as a subprocess: clean nvt-* objects before and after."""
    conn = libvirt.open(SYSTEM_URI)
    cleanup(conn)
    yield
    cleanup(conn)
    conn.close()


@pytest.fixture
async def system_conn():
    register_event_loop()
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as exc:
        pytest.fail(f"the real libvirtd is not reachable at {SYSTEM_URI} ({exc}); run scripts/start-libvirtd")
    cleanup(conn)
    yield conn
    try:
        cleanup(conn)
    except libvirt.libvirtError:  # a test restarted libvirtd: reconnect to clean up
        conn = libvirt.open(SYSTEM_URI)
        cleanup(conn)
    conn.close()


@pytest.fixture
def system_settings(settings, dirs, system_conn):
    # depends on system_conn so that its clean-up runs after the daemon has stopped
    images = Path("/var/lib/libvirt/images/nvirtd-tests") / dirs["state"].parent.name
    images.mkdir(parents=True, exist_ok=True)
    yield replace(settings, uri=SYSTEM_URI, images_dir=str(images))
    subprocess.run(["rm", "-rf", str(images)], check=False)


def qcow2(path: Path, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def qemu_pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"guest={name},"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def restart_libvirtd() -> None:
    subprocess.run(["/etc/init.d/libvirtd", "restart"], check=True, capture_output=True)
    for _ in range(100):
        if subprocess.run(["virsh", "-c", SYSTEM_URI, "version"], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("libvirtd did not come back")


@pytest.fixture(scope="session")
def guest() -> Path:
    """The TCG test guest: a kernel and a busybox initramfs (scripts/make-test-guest)."""
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([str(repo / "scripts" / "make-test-guest")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def nix_settings(system_settings, tmp_path, monkeypatch):
    """The real libvirtd, with nix disks built by the test image builder (real nix)."""
    from tests.adapters.test_images import build_command
    from tests.conftest import nix_env
    for key, value in nix_env().items():
        monkeypatch.setenv(key, value)
    return replace(system_settings, build_command=build_command(tmp_path / "builds.log"))


async def stopped_on_overlay(start_daemon, settings, config_dir: Path, name: str, spec: dict):
    """The daemon on one stopped VM whose nix disk `root` has its overlay, settled:
    (the daemon, the overlay's path)."""
    import os

    from tests.conftest import write_json
    from tests.engine.test_reconcile import wait_for
    write_json(config_dir / "a.json", {"domains": {name: {**spec, "state": "stopped"}}})
    daemon = await start_daemon(settings)
    overlay = f"{settings.images_dir}/{name}-root.qcow2"
    await wait_for(lambda: os.path.exists(overlay), 60, "the overlay")
    await daemon.settle()
    return daemon, overlay


def fill(overlay: str, pattern: int, length: str = "64k") -> None:
    """The guest's data: `length` bytes of `pattern` at the start of the disk (qemu-io)."""
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} 0 {length}", overlay], check=True,
                   capture_output=True)
