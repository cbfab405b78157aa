"""A change never reaches a foreign object that took the name of ours, on the real libvirtd.

The network half of tests/adapters/test_hypervisor_races.py: libvirt's test driver
finds networks by name even through a handle, the real network driver by UUID
(the handle's identity), which is what nvirtd relies on.
"""

from __future__ import annotations

import pytest

from daemon.adapters.hypervisor import Hypervisor
from daemon.core.network_xml import render_network
from daemon.core.spec import Network
from daemon.errors import HypervisorError
from tests.integration.conftest import SYSTEM_URI

pytestmark = pytest.mark.integration

FOREIGN = ("<network><name>nvt-taken</name><uuid>4c1d2a6e-0f0e-4b1a-8f2e-0123456789ab</uuid>"
           "<bridge name='nvt-taken0'/><ip address='10.216.0.1' prefix='24'/></network>")


async def test_a_network_change_never_reaches_a_foreign_network_that_took_the_name(system_conn):
    ours = render_network("nvt-taken", Network.model_validate({"forward": "isolated",
                                                               "ip": {"address": "10.215.0.1"}}),
                          {}, source_file="a.json")
    hv = Hypervisor(SYSTEM_URI)
    await hv.connect()
    try:
        await hv.define_network(ours.xml)
        assert (await hv.observe_network("nvt-taken")).owned  # the look that changes go through
        # then someone removes ours and makes their own under the same name
        system_conn.networkLookupByName("nvt-taken").undefine()
        system_conn.networkDefineXML(FOREIGN).create()
        await hv.destroy_network("nvt-taken")  # ours is gone: nothing to do
        await hv.undefine_network("nvt-taken")
        with pytest.raises(HypervisorError):
            await hv.set_network_autostart("nvt-taken", True)  # ours is gone: look again
        foreign = system_conn.networkLookupByName("nvt-taken")
        assert foreign.isActive() == 1 and foreign.UUIDString() == "4c1d2a6e-0f0e-4b1a-8f2e-0123456789ab"
        assert foreign.autostart() == 0
    finally:
        await hv.close()
        hv.shutdown_pool()
