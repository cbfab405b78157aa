"""Re-plugging taps with the real `ip`: what a guest that stopped meanwhile looks like."""

from __future__ import annotations

import shutil

import pytest

from daemon.adapters import hostnet
from daemon.adapters.hypervisor_networks import runs_on_this_host
from daemon.errors import CommandError

pytestmark = pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed")


async def test_a_tap_that_is_gone_is_skipped_not_an_error():
    # the guest stopped between listing its NIC and plugging it: libvirt deleted its tap
    assert await hostnet.plug("nvt-gone-tap0", "nvt-no-bridge", domain="web") is False


async def test_a_tap_that_exists_but_cannot_be_plugged_is_an_error():
    # lo exists; the bridge does not, so nothing changes and the failure is reported
    with pytest.raises(CommandError, match="nvt-no-bridge"):
        await hostnet.plug("lo", "nvt-no-bridge", domain="web")


@pytest.mark.parametrize("uri,local", [
    ("qemu:///system", True), ("qemu+unix:///system", True), ("qemu:///session", True),
    ("test:///default", False), ("qemu+ssh://root@vmhost/system", False), ("qemu+tcp://vmhost/system", False),
])
def test_only_a_local_driver_has_its_taps_here(uri, local):
    assert runs_on_this_host(uri) is local
