"""`nvirtd status` shows each running guest's IP addresses, by NIC name, with their source.

libvirt's test driver answers interfaceAddresses(LEASE) with an address per NIC on a
network (192.168.122.N) and has no guest agent; the real leases are in
tests/integration/test_boot_and_network.py.
"""

from __future__ import annotations

import json

from daemon import commands, status as status_mod
from daemon.core import identity
from tests.conftest import TEST_URI, domain, write_json


async def test_running_guests_get_their_addresses_by_nic_name(dirs, settings, start_daemon):
    write_json(dirs["config"] / "a.json", {"domains": {
        "web": domain(interfaces={"lan": {"network": "default"}}),
        "off": domain(state="stopped", interfaces={"lan": {"network": "default"}})}})
    d = await start_daemon(settings)
    data = json.loads(json.dumps(d.daemon.status.to_json()))  # what status.json holds
    web = next(e for e in data["domains"] if e["name"] == "web")
    assert web["interfaces"] == {"lan": identity.interface_mac(identity.domain_uuid("web"), "lan")}
    import asyncio
    await asyncio.to_thread(commands._add_addresses, data)  # the status command's own step
    web = next(e for e in data["domains"] if e["name"] == "web")
    off = next(e for e in data["domains"] if e["name"] == "off")
    assert [a["source"] for a in web["addresses"]["lan"]] == ["lease"]
    assert web["addresses"]["lan"][0]["address"].startswith("192.168.122.")
    assert web["addresses"]["lan"][0]["family"] == "ipv4"
    assert "addresses" not in off  # not running: nothing asked
    table = status_mod.render_table(data)
    assert f"  lan: {web['addresses']['lan'][0]['address']} (lease)" in table.splitlines()


def test_a_libvirt_that_cannot_be_reached_is_a_warning_not_a_failure(tmp_path):
    data = {"summary": "1 domain: 1 running", "libvirt": {"uri": "qemu+unix:///system?socket=/nonexistent"},
            "domains": [{"name": "web", "phase": "running", "conditions": [], "changed_at": 0,
                         "interfaces": {"lan": "52:54:00:00:00:01"}}]}
    commands._add_addresses(data)
    assert "addresses" not in data["domains"][0]
    assert data["warnings"][0].startswith("no guest addresses: libvirt at qemu+unix:///system")
    assert "warning: no guest addresses" in status_mod.render_table(data)


def test_no_addresses_flag_and_a_stopped_daemon(dirs):
    """status.json of a daemon that is gone: the addresses are still read (libvirt runs on)."""
    state = dirs["state"]
    (state / "status.json").write_text(json.dumps({
        "summary": "0 domains", "libvirt": {"uri": TEST_URI}, "domains": [], "networks": [],
        "daemon": {"pid": 0}}))
    from tests.service.test_cli import nvirtd
    shown = nvirtd("status", "--state-dir", str(state), "--no-addresses")
    assert shown.returncode == 0 and "nvirtd is not running" in shown.stdout
