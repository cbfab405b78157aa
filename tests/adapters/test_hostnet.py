"""Re-plugging taps with the real `ip`, on a real tap device and bridge made for the test.

Needs CAP_NET_ADMIN (the suite runs as root, as CI does); skipped without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from daemon.adapters import hostnet
from daemon.adapters.hostnet import GuestTap
from daemon.adapters.hypervisor_networks import runs_on_this_host
from daemon.errors import CommandError

GUEST_MAC = "52:54:00:12:34:56"


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@pytest.fixture
def tap_and_bridge():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed")
    suffix = uuid.uuid4().hex[:6]
    tap, bridge = f"nvt-t{suffix}", f"nvt-b{suffix}"
    made = ip("tuntap", "add", "dev", tap, "mode", "tap")
    if made.returncode != 0:
        pytest.skip(f"cannot make a tap device here: {made.stderr.strip()}")
    try:
        # what libvirt does: the tap's own MAC is the guest's with 0xfe first
        assert ip("link", "set", "dev", tap, "address", "fe" + GUEST_MAC[2:]).returncode == 0
        assert ip("link", "add", bridge, "type", "bridge").returncode == 0
        yield tap, bridge
    finally:
        ip("link", "del", tap)
        ip("link", "del", bridge)


def on_bridge(bridge: str) -> set[str]:
    return set(os.listdir(f"/sys/class/net/{bridge}/brif"))


async def test_the_guests_tap_goes_back_on_the_bridge(tap_and_bridge):
    tap, bridge = tap_and_bridge
    assert await hostnet.plug(GuestTap("web", tap, GUEST_MAC), bridge) is True
    assert tap in on_bridge(bridge)


async def test_a_tap_name_now_used_by_another_guest_is_left_alone(tap_and_bridge):
    # the guest stopped, and another guest's new tap got its name: never move that one
    tap, bridge = tap_and_bridge
    assert await hostnet.plug(GuestTap("web", tap, "52:54:00:aa:bb:cc"), bridge) is False
    assert tap not in on_bridge(bridge)


async def test_a_tap_that_is_gone_is_skipped_not_an_error():
    assert await hostnet.plug(GuestTap("web", "nvt-gone-tap0", GUEST_MAC), "nvt-no-bridge") is False


async def test_a_tap_that_cannot_be_plugged_is_an_error(tap_and_bridge):
    tap, _ = tap_and_bridge
    with pytest.raises(CommandError, match="nvt-no-bridge"):
        await hostnet.plug(GuestTap("web", tap, GUEST_MAC), "nvt-no-bridge")


def test_the_tap_mac_is_derived_as_libvirt_does():
    assert GuestTap("d", "vnet0", "52:54:00:AB:cd:01").host_mac == "fe:54:00:ab:cd:01"
    assert GuestTap("d", "vnet0", "fe:54:00:ab:cd:01").host_mac == "fa:54:00:ab:cd:01"


@pytest.mark.parametrize("uri,local", [
    ("qemu:///system", True), ("qemu+unix:///system", True), ("qemu:///session", True),
    ("test:///default", False), ("qemu+ssh://root@vmhost/system", False), ("qemu+tcp://vmhost/system", False),
])
def test_only_a_local_driver_has_its_taps_here(uri, local):
    assert runs_on_this_host(uri) is local
