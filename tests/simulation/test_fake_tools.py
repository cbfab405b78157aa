"""The simulation's qemu-img, held to the real one: the same commands, the same answers
as the images adapter reads them (format, sizes, backing file), the same refusals."""

from __future__ import annotations

import json

import pytest

from daemon.adapters import images, proc
from daemon.adapters.images import Images
from daemon.errors import CommandError, PermanentError
from tests.simulation.fake_tools import FakeTools


@pytest.fixture(params=["qemu-img", "fake"])
def tool(request, tmp_path, monkeypatch):
    base = tmp_path / "base.qcow2"
    if request.param == "fake":
        fake = FakeTools(tmp_path / "store", tmp_path / "roots")
        fake._write_image(base, size=64 * 2**20, backing=None)
        monkeypatch.setattr(proc, "run", fake.run)
    else:
        import subprocess
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    return base


def create(base, target, *size):
    return proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(target), *size])


async def test_an_overlay_reports_its_backing_and_the_base_size(tool, tmp_path):
    await create(tool, tmp_path / "vm.qcow2")
    info = await images.image_info(str(tmp_path / "vm.qcow2"))
    assert (info.format, info.backing, info.backing_format) == ("qcow2", str(tool), "qcow2")
    assert info.virtual_size == 64 * 2**20 and info.actual_size > 0
    base = await images.image_info(str(tool))
    assert base.backing is None and base.virtual_size == 64 * 2**20


async def test_an_overlay_can_be_larger_than_its_base(tool, tmp_path):
    await create(tool, tmp_path / "big.qcow2", str(128 * 2**20))
    assert (await images.image_info(str(tmp_path / "big.qcow2"))).virtual_size == 128 * 2**20


async def test_a_missing_backing_file_is_refused(tool, tmp_path):
    with pytest.raises(CommandError, match="Could not open backing image"):
        await create(tmp_path / "gone.qcow2", tmp_path / "vm.qcow2")


async def test_a_file_that_is_no_image_cannot_be_inspected(tool, tmp_path):
    junk = tmp_path / "junk.qcow2"
    junk.write_text(json.dumps({"not": "an image"})[:5])
    if not isinstance(getattr(proc.run, "__self__", None), FakeTools):
        pytest.skip("qemu-img reads any file as a raw image; the fake refuses it (a difference on purpose: "
                    "nvirtd only ever inspects files it created)")
    with pytest.raises(CommandError):
        await images.image_info(str(junk))


async def test_an_overlay_grows_in_place_and_refuses_to_shrink(tool, tmp_path):
    overlay = tmp_path / "vm.qcow2"
    await create(tool, overlay)
    adapter = Images(state_dir=str(tmp_path / "state"))
    grown = await adapter.grow_overlay(str(overlay), 96 * 2**20, domain="vm", disk="root")
    assert grown.virtual_size == 96 * 2**20 and grown.backing == str(tool)
    with pytest.raises(PermanentError, match="refusing to shrink"):
        await adapter.grow_overlay(str(overlay), 80 * 2**20, domain="vm", disk="root")
    # and qemu-img itself, should the adapter's own check ever be bypassed
    with pytest.raises(CommandError, match="--shrink"):
        await proc.run(["qemu-img", "resize", "-q", "-f", "qcow2", str(overlay), str(80 * 2**20)])
    assert (await images.image_info(str(overlay))).virtual_size == 96 * 2**20
