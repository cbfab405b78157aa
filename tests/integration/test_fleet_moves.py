"""A running VM moves between two real hosts by live migration, through nvirtd alone.

Two libvirtds, each in its own namespaces with its own /var/lib/libvirt, /etc/libvirt
(host_uuid), /run and /var/lib/nvirtd, joined by a veth pair (scripts/fleet-hosts); an
nvirtd on each, one config for both. The TCG test guest boots from a nix-built base
under its overlay and counts, writing each number with its boot's id to its disk. Its
`host` changes: h2 prepares, h1 migrates. The count goes on across the move with no
step lost and no second boot, the overlay on h2 holds what the guest wrote on h1, h1
holds nothing and keeps its old overlay aside, and h2 took the VM as its own without
redefining it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.adapters.test_images import FAKE
from tests.conftest import domain, nix_env, write_json
from tests.integration.fleet_hosts import fleet_down, fleet_up, peer_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "nvt-move"
COUNT = re.compile(r"^NVIRTD-COUNT (\d+)\r?$", re.M)


@pytest.fixture(scope="module")
def fleet_hosts():
    hosts = fleet_up()
    yield hosts
    for host in hosts.values():
        host.close()
    fleet_down()


@pytest.fixture
def hosts(fleet_hosts):
    """The two hosts, with no daemon and no nvt-* domain left after the test."""
    yield fleet_hosts
    for host in fleet_hosts.values():
        host.stop_daemon()
        host.clean()


def wait(predicate, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def phase(host) -> str | None:
    """The VM's phase in the host's `nvirtd status --json`."""
    return entry(host).get("phase")


def counts(text: str) -> list[int]:
    return [int(n) for n in COUNT.findall(text)]


def disk_line(path, sector: int = 0) -> str:
    """The line at the start of a sector of the guest's disk (read beside the running guest)."""
    out = subprocess.run(["qemu-io", "-U", "-r", "-f", "qcow2", "-c", f"read -v {sector * 512} 64", str(path)],
                         capture_output=True, text=True, check=True).stdout
    data = bytes.fromhex("".join("".join(line.split(":", 1)[1].split()[:16]) for line in out.splitlines()
                                 if re.match(r"^[0-9a-f]{8}:", line)))
    return data.split(b"\n", 1)[0].decode(errors="replace")


def config(tmp_path, guest, on: str, **extra) -> dict:
    nix = tmp_path / "move.nix"
    nix.write_text(f'# {tmp_path}\n{{ ... }}: {{ networking.hostName = "{NAME}"; }}\n')
    spec = domain(128, host=on, hosts=["h2" if on == "h1" else "h1"], virtType="qemu", consoleLog=True, shutdownTimeout=1,
                  boot={"kernel": str(guest / "vmlinuz"), "initrd": str(guest / "initrd.gz"),
                        "cmdline": "console=ttyS0 quiet nvirtd.count"},
                  disks={"root": {"type": "nix", "path": str(nix)}}, **extra)
    return {"domains": {NAME: spec}}


def test_a_running_vm_whose_host_changes_moves_live_and_keeps_its_data(hosts, guest, tmp_path):
    h1, h2 = hosts["h1"], hosts["h2"]
    cfg = tmp_path / "config"
    cfg.mkdir()
    write_json(cfg / "fleet.json", config(tmp_path, guest, "h1"))
    build = ("sh", "-c", f'exec nix-build {FAKE} --no-out-link --arg configuration "$0"', "{path}")
    h1.start_daemon(cfg, {"h2": peer_uri("h2")}, build, nix_env(), tmp_path / "h1.log")
    h2.start_daemon(cfg, {"h1": peer_uri("h1")}, build, nix_env(), tmp_path / "h2.log")
    wait(lambda: len(counts(h1.console(NAME))) >= 10, 120, "the guest counting on h1")
    boot = re.search(r"NVIRTD-BOOT (\S+)", h1.console(NAME)).group(1)
    assert not h2.holds(NAME)

    write_json(cfg / "fleet.json", config(tmp_path, guest, "h2"))  # both daemons watch the directory
    wait(lambda: h2.runs(NAME) and not h1.holds(NAME), 60, "the VM running on h2 and gone from h1")
    wait(lambda: len(counts(h2.console(NAME))) >= 10, 30, "the guest counting on h2")

    on_h1, on_h2 = counts(h1.console(NAME)), counts(h2.console(NAME))
    assert on_h2[0] > on_h1[0]  # it went on counting: not a new boot
    seen = set(on_h1) | set(on_h2)
    lost = set(range(1, max(seen) + 1)) - seen
    assert len(lost) <= 1, f"steps lost in the move: {sorted(lost)}"  # at most the line cut by the switch
    assert "NVIRTD-GUEST-BOOTED" not in h2.console(NAME) and "NVIRTD-BOOT" not in h2.console(NAME)

    overlay = h2.root / "images" / f"{NAME}-root.qcow2"
    assert disk_line(overlay, 1) == f"NVIRTD-BOOT {boot}"  # written on h1 before the move, once: it came along
    number, on_disk_boot = disk_line(overlay).split()[1:3]
    assert on_disk_boot == boot and int(number) >= on_h2[0]  # and the guest writes on, on h2

    # h1 holds nothing and kept its overlay aside, never deleted
    wait(lambda: any(p.name.startswith(f"{NAME}-root.qcow2.moved-to-h2-") for p in (h1.root / "images").iterdir()),
         15, "h1's overlay kept aside")
    assert not (h1.root / "images" / f"{NAME}-root.qcow2").exists()
    # h2 took the migrated definition as its own: no redefine after it arrived
    done = [a for p in h2.passes(NAME) for a in p["actions"]]
    assert done.count("define") == 1 and done.index("adopt") > done.index("define"), done  # the arrival's only
    assert h2.conn.lookupByName(NAME).autostart() == 1

    # maintenance of h2: drained, the VM goes to its alternative, h1, the same way; then back
    before = max(counts(h2.console(NAME)))
    drained = h2.nvirtd("drain", "h2", "--state-dir", "/var/lib/nvirtd", "--timeout", "120")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert "drained: no VM runs here" in drained.stdout and "moving to host 'h1'" in drained.stdout
    assert h1.runs(NAME) and not h2.holds(NAME)
    wait(lambda: max(counts(h1.console(NAME))) > before + 5, 30, "the guest counting on h1 again")
    assert h1.console(NAME).count("NVIRTD-BOOT") == 1  # still the first boot
    wrong = h1.nvirtd("drain", "h2", "--state-dir", "/var/lib/nvirtd")
    assert wrong.returncode == 1 and "this is host 'h1'" in wrong.stderr

    undone = h2.nvirtd("drain", "--undo", "--state-dir", "/var/lib/nvirtd")
    assert undone.returncode == 0 and "no longer drained" in undone.stdout
    wait(lambda: h2.runs(NAME) and not h1.holds(NAME), 60, "the VM back on h2")
    assert disk_line(h2.root / "images" / f"{NAME}-root.qcow2", 1) == f"NVIRTD-BOOT {boot}"

    # a stopped VM moves too: started paused (its guest never runs), migrated, powered off
    write_json(cfg / "fleet.json", config(tmp_path, guest, "h2", state="stopped"))
    wait(lambda: h2.holds(NAME) and not h2.runs(NAME), 30, "the VM stopped on h2")
    write_json(cfg / "fleet.json", config(tmp_path, guest, "h1", state="stopped"))
    wait(lambda: h1.holds(NAME) and not h1.runs(NAME) and not h2.holds(NAME), 60, "the stopped VM moved to h1")
    assert disk_line(h1.root / "images" / f"{NAME}-root.qcow2", 1) == f"NVIRTD-BOOT {boot}"
    assert h1.console(NAME).count("NVIRTD-BOOT") == 1  # its guest never ran on the way
    assert not (h2.root / "images" / f"{NAME}-root.qcow2").exists()  # h2's kept aside
    wait(lambda: phase(h1) == "stopped", 15, "h1 settled on the stopped VM")
    done = [a for p in h1.passes(NAME) for a in p["actions"]]
    after = done[len(done) - done[::-1].index("destroy"):]
    assert not {"define", "start"} & set(after), done  # no redefine, no start


def test_a_migration_past_its_timeout_is_aborted_and_the_vm_runs_on_where_it_was(hosts, guest, tmp_path):
    h1, h2 = hosts["h1"], hosts["h2"]
    cfg = tmp_path / "config"
    cfg.mkdir()
    slow = {"timeout": 10, "bandwidth": 1}  # 1 MiB/s: the guest's memory takes far longer than 10 s
    write_json(cfg / "fleet.json", config(tmp_path, guest, "h1", migration=slow))
    build = ("sh", "-c", f'exec nix-build {FAKE} --no-out-link --arg configuration "$0"', "{path}")
    h1.start_daemon(cfg, {"h2": peer_uri("h2")}, build, nix_env(), tmp_path / "h1.log")
    h2.start_daemon(cfg, {"h1": peer_uri("h1")}, build, nix_env(), tmp_path / "h2.log")
    wait(lambda: len(counts(h1.console(NAME))) >= 5, 120, "the guest counting on h1")

    write_json(cfg / "fleet.json", config(tmp_path, guest, "h2", migration=slow))
    wait(lambda: "did not finish within 10 s" in (entry(h1).get("error") or ""), 60, "the aborted migration")
    assert "aborted); libvirt leaves the VM running here as it was" in entry(h1)["error"]
    # where it was; h2 still holds the arrival (or the next try's incoming domain, paused): no guest runs there
    assert h1.guest_runs(NAME) and h2.holds(NAME) and not h2.guest_runs(NAME)
    wait(lambda: "its last try failed: the live migration did not finish" in (entry(h2).get("message") or ""), 15,
         "the reason in h2's status too")
    counted = max(counts(h1.console(NAME)))
    wait(lambda: max(counts(h1.console(NAME))) > counted + 5, 15, "the guest counting on, on h1")
    assert h1.console(NAME).count("NVIRTD-BOOT") == 1

    write_json(cfg / "fleet.json", config(tmp_path, guest, "h2"))  # no limit: the next try goes through
    wait(lambda: h2.runs(NAME) and not h1.holds(NAME), 90, "the VM on h2 after the limit went")


def entry(host) -> dict:
    out = host.nvirtd("status", "--state-dir", "/var/lib/nvirtd", "--json", "--no-addresses", timeout=30)
    return next((e for e in json.loads(out.stdout)["domains"] if e["name"] == NAME), {})
