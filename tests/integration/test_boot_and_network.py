"""A real kernel boots (TCG) with direct kernel boot, on an nvirtd NAT network.

The guest (scripts/make-test-guest: Debian's cloud kernel + a busybox initramfs)
prints a marker on its serial console, asks for a DHCP lease, and powers off.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from daemon.core import identity
from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.test_system_libvirtd import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def booting(guest: Path, cmdline: str = "", **extra) -> dict:
    return domain(256, virtType="qemu", consoleLog=True, shutdownTimeout=1,
                  boot={"kernel": str(guest / "vmlinuz"), "initrd": str(guest / "initrd.gz"),
                        "cmdline": f"console=ttyS0 quiet {cmdline}".strip()}, **extra)


async def lease_in_status(state_dir: Path, name: str, nic: str, address: str, timeout: float = 60) -> dict:
    """`nvirtd status --json`, the command itself, until it shows the lease (the guest
    boots in a loop: the address shows while it runs)."""
    import asyncio
    import json

    from tests.service.test_cli import nvirtd
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        out = await asyncio.to_thread(nvirtd, "status", "--state-dir", str(state_dir), "--json")
        entry = next((e for e in json.loads(out.stdout)["domains"] if e["name"] == name), {})
        if any(a["address"] == address and a["source"] == "lease" for a in entry.get("addresses", {}).get(nic, [])):
            table = await asyncio.to_thread(nvirtd, "status", "--state-dir", str(state_dir))
            if any(line.startswith(f"  {nic}: ") and f"{address} (lease)" in line for line in table.stdout.splitlines()):
                return entry
        await asyncio.sleep(0.5)
    raise AssertionError(f"nvirtd status never showed {address} for {name}.{nic}")


def console(state_dir: Path, name: str) -> str:
    path = state_dir / "console" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def test_direct_kernel_boot_prints_to_the_console_log(dirs, system_settings, start_daemon, system_conn, guest):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-boot": booting(guest)}})
    await start_daemon(system_settings)
    await wait_for(lambda: "NVIRTD-GUEST-BOOTED" in console(dirs["state"], "nvt-boot"), 90, "the guest's marker")


def bridge_ports(bridge: str) -> set[str]:
    path = Path("/sys/class/net") / bridge / "brif"
    return set(os.listdir(path)) if path.exists() else set()


def tap_of(conn, name: str) -> str:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    return root.find("./devices/interface/target").get("dev")


async def test_nat_network_gives_the_static_lease_and_survives_a_change(dirs, system_settings, start_daemon,
                                                                         system_conn, guest):
    net = {"forward": "nat", "ip": {"address": "10.213.0.1", "prefix": 24},
           "dhcp": {"range": {"start": "10.213.0.100", "end": "10.213.0.200"},
                    "hosts": {"nvt-dhcp": "10.213.0.10"}}}
    config = {
        "networks": {"nvt-lab": net},
        "domains": {
            "nvt-dhcp": booting(guest, "nvirtd.dhcp", interfaces={"lan": {"network": "nvt-lab"}}),
            # no OS, under TCG (this host's nested KVM stops a guest whose NIC ROM runs)
            "nvt-idle": domain(96, virtType="qemu", shutdownTimeout=1, interfaces={"lan": {"network": "nvt-lab"}}),
        },
    }
    write_json(dirs["config"] / "a.json", config)
    d = await start_daemon(system_settings)
    network = system_conn.networkLookupByName("nvt-lab")
    assert network.isActive() == 1 and network.autostart() == 1
    bridge = identity.bridge_name("nvt-lab")
    assert network.bridgeName() == bridge
    dnsmasq = subprocess.run(["pgrep", "-f", "dnsmasq.*nvt-lab"], capture_output=True, text=True).stdout
    assert dnsmasq.strip(), "no dnsmasq for the network"
    await wait_for(lambda: "NVIRTD-DHCP-OK lease of 10.213.0.10" in console(dirs["state"], "nvt-dhcp"), 120,
                   "the static lease")
    uuid = identity.domain_uuid("nvt-dhcp")
    assert identity.interface_mac(uuid, "lan") in system_conn.lookupByName("nvt-dhcp").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE)
    await lease_in_status(dirs["state"], "nvt-dhcp", "lan", "10.213.0.10/24")

    await wait_for(lambda: running(system_conn, "nvt-idle"), 30, "nvt-idle running")
    tap = tap_of(system_conn, "nvt-idle")
    assert tap in bridge_ports(bridge)

    # a changed static lease is applied in place: dnsmasq is not restarted, no guest is unplugged,
    # and the guest (which boots again and again: it powers off after its lease) gets the new one
    before = dict(d.hv.mutations)
    net["dhcp"]["hosts"]["nvt-dhcp"] = "10.213.0.11"
    write_json(dirs["config"] / "a.json", config)
    await d.reload()
    await wait_for(lambda: "NVIRTD-DHCP-OK lease of 10.213.0.11" in console(dirs["state"], "nvt-dhcp"), 120,
                   "the new static lease")
    assert subprocess.run(["pgrep", "-f", "dnsmasq.*nvt-lab"], capture_output=True, text=True).stdout == dnsmasq
    assert tap_of(system_conn, "nvt-idle") == tap and tap in bridge_ports(bridge)
    assert d.hv.mutations["destroy_network"] == before.get("destroy_network", 0)
    assert d.hv.mutations["update_network"] == before.get("update_network", 0) + 1
    assert d.entry("nvt-lab", "network").last_actions == ["define", "update-hosts(+1 -1)"]
    persistent = system_conn.networkLookupByName("nvt-lab").XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    assert "ip='10.213.0.11'" in persistent and "ip='10.213.0.10'" not in persistent

    config["domains"]["nvt-dhcp"]["state"] = "stopped"  # it has shown its lease: stop its boot loop
    write_json(dirs["config"] / "a.json", config)
    await d.reload()
    await wait_for(lambda: not running(system_conn, "nvt-dhcp"), 30, "nvt-dhcp stopped")
    d.daemon.stop()  # a daemon restart after an update in place changes nothing
    await d.task
    d = await start_daemon(system_settings)
    assert d.hv.mutation_count == 0, d.hv.mutations

    net["dhcp"]["range"]["end"] = "10.213.0.150"  # a change that needs a network restart
    write_json(dirs["config"] / "a.json", config)
    await d.reload()
    await wait_for(lambda: "10.213.0.150" in system_conn.networkLookupByName("nvt-lab").XMLDesc(0), 30, "applied")
    await wait_for(lambda: tap_of(system_conn, "nvt-idle") in bridge_ports(bridge), 30, "NIC back on the bridge")
    await wait_for(lambda: "reattach-nics" in d.entry("nvt-lab", "network").last_actions, 10, "reattach reported")

    # stopped behind nvirtd's back (virsh net-destroy): started again, the guest plugged back in
    system_conn.networkLookupByName("nvt-lab").destroy()
    await wait_for(lambda: system_conn.networkLookupByName("nvt-lab").isActive() == 1, 30, "network restarted")
    await wait_for(lambda: tap_of(system_conn, "nvt-idle") in bridge_ports(bridge), 30, "NIC back after net-destroy")


async def test_domains_are_removed_before_their_network(dirs, system_settings, start_daemon, system_conn):
    write_json(dirs["config"] / "a.json", {
        "networks": {"nvt-gone": {"forward": "isolated", "ip": {"address": "10.214.0.1", "prefix": 24}}},
        "domains": {"nvt-user": domain(96, virtType="qemu", shutdownTimeout=1,
                                       interfaces={"lan": {"network": "nvt-gone"}})}})
    d = await start_daemon(system_settings)
    await wait_for(lambda: running(system_conn, "nvt-user"), 30, "running")
    (dirs["config"] / "a.json").unlink()
    await d.reload()
    await wait_for(lambda: "nvt-gone" not in [n.name() for n in system_conn.listAllNetworks()], 30,
                   "network removed after its domain")
    assert "nvt-user" not in [x.name() for x in system_conn.listAllDomains()]
