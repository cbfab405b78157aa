"""ResizeDisk, held to the real thing: libvirt's blockResize on a running QEMU guest (the
test driver has no blockResize) and the fake hypervisor answer the same way: grow, or
refuse before anything changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.adapters.fake_hypervisor import FakeHypervisor
from daemon.adapters.hypervisor import Hypervisor
from daemon.adapters.hypervisor_protocol import DefineDomain, Destroy, ResizeDisk, Start
from daemon.adapters.images import image_info
from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.spec import Domain, VirtType
from daemon.errors import HypervisorError
from tests.integration.conftest import SYSTEM_URI, qcow2

pytestmark = pytest.mark.integration
MIB = 2**20


@pytest.fixture(params=["qemu", "fake"])
async def world(request, system_settings, system_conn):
    disk = qcow2(Path(system_settings.images_dir) / "nvt-rs.qcow2", "64M")
    spec = Domain.model_validate({"memory": {"amount": 96, "unit": "MiB"}, "virtType": "qemu",
                                  "disks": {"d": {"type": "file", "path": str(disk), "driver": {"type": "qcow2"}}}})
    d = render_domain("nvt-rs", spec, RenderContext(VirtType.qemu, system_settings.images_dir,
                                                   system_settings.state_dir), source_file="c.json")
    if request.param == "qemu":
        hv = Hypervisor(SYSTEM_URI)
        size = lambda: system_conn.lookupByName("nvt-rs").blockInfo(str(disk))[0]  # noqa: E731
    else:
        hv = FakeHypervisor()
        hv.image_sizes = {str(disk): 64 * MIB}
        size = lambda: hv.image_sizes[str(disk)]  # noqa: E731
    await hv.connect()
    await hv.apply("nvt-rs", [DefineDomain(d.xml, d.owner), Start()])
    await hv.observe_domain("nvt-rs")
    yield hv, str(disk), size
    await hv.close()
    hv.shutdown_pool()


async def test_a_running_guests_disk_grows_and_is_never_shrunk(world):
    hv, disk, size = world
    assert await hv.live_disks("nvt-rs") == {disk}
    await hv.apply("nvt-rs", [ResizeDisk(disk, 96 * MIB)])
    assert size() == 96 * MIB
    with pytest.raises(HypervisorError, match="refusing to shrink"):
        await hv.apply("nvt-rs", [ResizeDisk(disk, 80 * MIB)])
    assert size() == 96 * MIB
    await hv.apply("nvt-rs", [ResizeDisk(disk, 96 * MIB)])  # already that size: done


async def test_a_disk_the_guest_does_not_have_or_a_stopped_guest_is_refused(world):
    hv, disk, size = world
    with pytest.raises(HypervisorError):
        await hv.apply("nvt-rs", [ResizeDisk(disk + ".other", 96 * MIB)])
    await hv.apply("nvt-rs", [Destroy()])
    with pytest.raises(HypervisorError, match="not running"):
        await hv.apply("nvt-rs", [ResizeDisk(disk, 96 * MIB)])
    assert (await image_info(disk)).virtual_size == 64 * MIB
