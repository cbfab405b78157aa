"""The live operations, held to the real thing: QEMU under the real libvirtd (libvirt's test
driver cannot plug devices) and the fake hypervisor answer the same way. The guest has
no OS, so it never releases an unplugged device: the request returns and the device
stays, which is what nvirtd's pending unplug waits on. A guest that does release one is
tests/integration/test_live_changes.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.adapters.fake_hypervisor import FakeHypervisor
from daemon.adapters.hypervisor import Hypervisor
from daemon.adapters.hypervisor_protocol import (AttachDevice, DefineDomain, Destroy, DetachDevice, SetLiveOwner,
                                                 SetMemory, SetVcpus, Start)
from daemon.core import live_changes
from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.spec import Domain, VirtType
from daemon.errors import HypervisorError
from tests.integration.conftest import SYSTEM_URI, qcow2

pytestmark = pytest.mark.integration
MAC = "52:54:00:5e:00:42"
NIC = f"<interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>"


@pytest.fixture(params=["qemu", "fake"])
async def world(request, system_settings, system_conn):
    disk = qcow2(Path(system_settings.images_dir) / "nvt-lc-data.qcow2", "16M")
    spec = Domain.model_validate({"memory": {"amount": 96, "max": 160, "unit": "MiB"}, "virtType": "qemu",
                                  "cpu": {"amount": 1, "max": 3}})
    d = render_domain("nvt-lc", spec, RenderContext(VirtType.qemu, system_settings.images_dir,
                                                   system_settings.state_dir), source_file="c.json")
    if request.param == "qemu":
        hv = Hypervisor(SYSTEM_URI)
        vcpus = lambda: system_conn.lookupByName("nvt-lc").vcpusFlags(1)  # noqa: E731  (AFFECT_LIVE)
        nics = lambda: system_conn.lookupByName("nvt-lc").XMLDesc(0).count("<interface")  # noqa: E731
    else:
        hv = FakeHypervisor()
        vcpus = lambda: int(hv._by_name("nvt-lc").live.find("vcpu").get("current"))  # noqa: E731
        nics = lambda: len(hv._by_name("nvt-lc").live.findall("./devices/interface"))  # noqa: E731
    await hv.connect()
    await hv.apply("nvt-lc", [DefineDomain(d.xml, d.owner), Start()])
    if request.param == "fake":
        hv._by_name("nvt-lc").releases_devices = False  # as the guest without an OS
    await hv.observe_domain("nvt-lc")
    disk_xml = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
                "<target dev='vdb' bus='virtio'/><alias name='ua-data'/></disk>")
    yield hv, (vcpus, nics), disk_xml, d
    await hv.close()
    hv.shutdown_pool()


async def test_vcpus_rise_to_the_max_and_no_further(world):
    hv, (vcpus, _), _, _ = world
    await hv.apply("nvt-lc", [SetVcpus(3)])
    assert vcpus() == 3
    with pytest.raises(HypervisorError):
        await hv.apply("nvt-lc", [SetVcpus(4)])
    assert vcpus() == 3
    await hv.apply("nvt-lc", [SetMemory(128 * 1024)])  # a balloon target within max is taken
    with pytest.raises(HypervisorError):
        await hv.apply("nvt-lc", [SetMemory(256 * 1024)])


async def test_a_device_is_plugged_once_and_an_unplug_waits_for_the_guest(world):
    hv, (_, nics), disk_xml, _ = world
    assert MAC not in await hv.live_devices("nvt-lc")
    await hv.apply("nvt-lc", [AttachDevice(NIC, MAC), AttachDevice(disk_xml, "ua-data")])
    await hv.apply("nvt-lc", [AttachDevice(NIC, MAC)])  # there already: done, not a second NIC
    assert nics() == 1
    present = await hv.live_devices("nvt-lc")
    assert {MAC, "ua-data"} <= present
    await hv.apply("nvt-lc", [DetachDevice(MAC), DetachDevice("ua-data")])
    assert {MAC, "ua-data"} <= await hv.live_devices("nvt-lc")  # asked; a guest without an OS never lets go
    await hv.apply("nvt-lc", [DetachDevice("52:54:00:00:00:01")])  # not there: done


async def test_the_live_owner_records_what_the_guest_has_and_a_stopped_guest_refuses(world):
    hv, _, _, d = world
    parts = live_changes.LiveParts(2, 98304, {"nic:lan": live_changes.Device("abc", MAC, 1700000000)})
    import dataclasses
    await hv.apply("nvt-lc", [SetLiveOwner(dataclasses.replace(d.owner, live=parts.encode()))])
    seen = await hv.observe_domain("nvt-lc")
    assert live_changes.decode(seen.live_owner.live) == parts
    assert live_changes.decode(seen.owner.live) == d.live  # the next boot's definition is untouched
    await hv.apply("nvt-lc", [Destroy()])
    await hv.observe_domain("nvt-lc")
    for op in (SetVcpus(2), SetMemory(100 * 1024), AttachDevice(NIC, MAC)):
        with pytest.raises(HypervisorError, match="not running"):
            await hv.apply("nvt-lc", [op])
