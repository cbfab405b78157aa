"""A fleet of two hosts sharing one config: h1 is the real libvirtd's QEMU (qemu:///system),
h2 the same libvirtd's test driver (test+unix:///default), each with its own nvirtd. Each
runs the domains placed on it and no other; when a running VM's host changes, h1 leaves
it running and h2 does not start a second one beside it until h1 no longer holds it; and
`nvirtd status --hosts` shows it all from either side. h2 prepares to receive the VM, but
the test driver cannot receive a live migration: h1's fails, says why, and the VM runs on
where it was (the moves themselves: test_fleet_moves.py, between two QEMU hosts)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import replace

import libvirt
import pytest

from daemon.core import fleet_moves
from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.conftest import SYSTEM_URI

pytestmark = pytest.mark.integration
H2_URI = "test+unix:///default"


def fleet(a_on: str) -> dict:
    return {"domains": {"nvt-fa": domain(96, host=a_on, virtType="qemu", shutdownTimeout=1),
                        "nvt-fb": domain(96, host="h2")}}


def fleet_status(config) -> dict:
    out = subprocess.run([sys.executable, "-m", "daemon", "status", "--hosts", f"h1={SYSTEM_URI},h2={H2_URI}",
                          "--config-dir", str(config), "--instance", "default", "--no-trust-checks", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)["domains"]}


@pytest.fixture
def h2_conn():
    conn = libvirt.open(H2_URI)
    yield conn
    for name in ("nvt-fa", "nvt-fb"):
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    conn.close()


async def test_each_host_runs_its_own_and_a_moved_vm_is_never_started_twice(
        dirs, system_settings, start_daemon, system_conn, h2_conn, tmp_path, monkeypatch):
    monkeypatch.setattr(fleet_moves, "MOVE_RECHECK", 0.5)
    write_json(dirs["config"] / "fleet.json", fleet("h1"))
    (tmp_path / "h2").mkdir()
    h1 = await start_daemon(replace(system_settings, host="h1", peers=(("h2", H2_URI),), peer_interval=0.5))
    h2 = await start_daemon(replace(system_settings, uri=H2_URI, host="h2", peers=(("h1", SYSTEM_URI),),
                                    peer_interval=0.5,
                                    state_dir=str(tmp_path / "h2"), images_dir=str(tmp_path / "h2")))
    assert system_conn.lookupByName("nvt-fa").isActive() == 1
    assert h2_conn.lookupByName("nvt-fb").isActive() == 1
    with pytest.raises(libvirt.libvirtError):
        system_conn.lookupByName("nvt-fb")  # placed on h2: never defined on h1
    with pytest.raises(libvirt.libvirtError):
        h2_conn.lookupByName("nvt-fa")
    seen = fleet_status(dirs["config"])
    assert seen["nvt-fa"]["runs_on"] == ["h1"] and seen["nvt-fb"]["runs_on"] == ["h2"]
    assert seen["nvt-fa"]["note"] == "" and seen["nvt-fb"]["note"] == ""

    write_json(dirs["config"] / "fleet.json", fleet("h2"))  # nvt-fa's host changes while it runs
    await h1.reload()
    await h2.reload()
    # h2 prepares its arrival: defined, never started; h1 then tries the live migration, which
    # the test driver cannot receive: it fails, and the VM goes on running on h1
    await wait_for(lambda: 'arrival="ready"' in _xml(h2_conn, "nvt-fa"), 10, "h2's arrival prepared")
    await wait_for(lambda: "live migration to test+unix:///default failed" in (h1.entry("nvt-fa").error or ""), 15,
                   "h1's failed migration in its status")
    assert "the VM runs here as before" in h1.entry("nvt-fa").error
    assert system_conn.lookupByName("nvt-fa").isActive() == 1  # left running where it is
    assert h2_conn.lookupByName("nvt-fa").isActive() == 0  # never a second VM beside the one that has its disks
    await wait_for(lambda: "its last try failed: live migration to test+unix:///default failed" in
                   (h2.entry("nvt-fa").message or ""), 10, "h1's failure in h2's status too")
    assert h2.entry("nvt-fa").message.startswith("ready to receive it from host 'h1'")
    seen = fleet_status(dirs["config"])["nvt-fa"]
    assert seen["note"] == "placed on h2: h2 is ready, h1 migrates it live" and seen["arriving_on"] == ["h2"]

    dom = system_conn.lookupByName("nvt-fa")  # moved by hand: gone from h1
    dom.destroy()
    dom.undefine()
    await wait_for(lambda: _runs(h2_conn, "nvt-fa"), 10, "nvt-fa started on h2 once h1 no longer holds it")
    seen = fleet_status(dirs["config"])
    assert seen["nvt-fa"]["runs_on"] == ["h2"] and seen["nvt-fa"]["note"] == ""
    assert h1.hv.mutations["undefine"] == 0 and h1.hv.mutations["shutdown"] == 0  # h1 never touched it


def _xml(conn, name: str) -> str:
    try:
        return conn.lookupByName(name).XMLDesc(0)
    except libvirt.libvirtError:
        return ""


def _runs(conn, name: str) -> bool:
    try:
        return conn.lookupByName(name).isActive() == 1
    except libvirt.libvirtError:
        return False
