"""Nix builds, GC roots and qcow2 overlays with the real nix and qemu-img.

The default NixOS image builder cannot run here (no nixpkgs, no network); the
build command is pointed at tests/nix/fake-nixos-image.nix, a real derivation
that makes a qcow2 with qemu-img. Everything after the build is the real thing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from daemon.adapters.images import Images, image_info, parse_build_output, store_root
from daemon.core.observed import BuildPhase
from daemon.errors import PermanentError
from tests.conftest import REPO, have, nix_env

pytestmark = [pytest.mark.nix, pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]
FAKE = str(REPO / "tests" / "nix" / "fake-nixos-image.nix")


def build_command(log: Path) -> tuple[str, ...]:
    """The fake builder, counting its runs in `log` (argv list, no shell from nvirtd)."""
    script = f'echo "$0" >> {log}; exec nix-build {FAKE} --no-out-link --arg configuration "$0"'
    return ("sh", "-c", script, "{path}")


def nix_config(tmp_path: Path, name: str, body: str = "") -> str:
    """A configuration unique to this test (its path is in it), so no other run's root keeps its image."""
    path = tmp_path / f"{name}.nix"
    path.write_text(f'# {tmp_path}\n{{ ... }}: {{ networking.hostName = "{name}"; {body} }}\n')
    return str(path)


@pytest.fixture
def images(tmp_path):
    os.environ.update(nix_env())
    done: list[str] = []
    img = Images(state_dir=str(tmp_path / "state"), build_command=build_command(tmp_path / "builds.log"),
                 jobs=2, on_built=done.append, retry_delay=0.2, build_env=nix_env())
    img.finished = done  # type: ignore[attr-defined]
    return img


async def built(images: Images, path: str, timeout: float = 60) -> str:
    images.request_build(path)
    for _ in range(int(timeout * 20)):
        state = images.build_state(path)
        if state.phase == BuildPhase.built:
            return state.image  # type: ignore[return-value]
        if state.phase == BuildPhase.failed:
            raise AssertionError(state.error)
        await asyncio.sleep(0.05)
    raise AssertionError("build did not finish")


def collect_garbage() -> None:
    subprocess.run(["nix-collect-garbage"], check=True, capture_output=True, env={**os.environ, **nix_env()})


def test_store_path_is_read_from_the_builders_output():
    out = "these derivations will be built:\n  /nix/store/aaa.drv\n/nix/store/" + "a" * 32 + "-nixos-image\n"
    assert parse_build_output(out) == "/nix/store/" + "a" * 32 + "-nixos-image"
    with pytest.raises(PermanentError, match="printed no /nix/store path"):
        parse_build_output("error: nothing\n")


async def test_build_roots_the_image_and_gc_keeps_it(images, tmp_path):
    cfg = nix_config(tmp_path, "a")
    image = await built(images, cfg)
    assert image.endswith("/nixos.qcow2") and image.startswith("/nix/store/")
    root = images.roots_dir / Path(store_root(image)).name
    assert root.is_symlink() and os.readlink(root) == store_root(image)
    collect_garbage()
    assert os.path.exists(image), "a rooted base image must survive nix-collect-garbage"
    assert images.finished == [cfg]


async def test_two_requests_for_one_configuration_build_once(images, tmp_path):
    cfg = nix_config(tmp_path, "shared")
    images.request_build(cfg)
    images.request_build(cfg)
    image = await built(images, cfg)
    assert (tmp_path / "builds.log").read_text().splitlines() == [cfg]
    assert images.build_state(cfg).image == image


async def test_overlay_has_the_expected_backing_file_and_size(images, tmp_path):
    image = await built(images, nix_config(tmp_path, "b"))
    overlay = str(tmp_path / "images" / "vm-root.qcow2")
    info = await images.create_overlay(overlay, image, size=2 * 2**30, domain="vm", disk="root")
    assert info.backing == image and info.backing_format == "qcow2" and info.virtual_size == 2 * 2**30
    data = json.loads(subprocess.run(["qemu-img", "info", "--output=json", overlay], capture_output=True,
                                     check=True).stdout)
    assert data["backing-filename"] == image and data["format"] == "qcow2"
    assert images.registry()[overlay]["backing"] == image
    with pytest.raises(PermanentError, match="never overwrites"):
        await images.create_overlay(overlay, image, size=None, domain="vm", disk="root")


async def test_overlay_smaller_than_the_base_is_refused_clearly(images, tmp_path):
    image = await built(images, nix_config(tmp_path, "c"))
    with pytest.raises(PermanentError, match=r"nix.size of disk root is 1.0 MiB, smaller than the image's virtual size 64.0 MiB"):
        await images.create_overlay(str(tmp_path / "o.qcow2"), image, size=2**20, domain="vm", disk="root")
    assert not (tmp_path / "o.qcow2").exists()


async def test_gc_collected_base_is_rebuilt_to_the_same_store_path(images, tmp_path):
    cfg = nix_config(tmp_path, "d")
    image = await built(images, cfg)
    for link in images.roots_dir.iterdir():
        link.unlink()  # someone removed the root by hand
    collect_garbage()
    assert not os.path.exists(image)
    images.invalidate()
    again = await built(images, cfg)
    assert again == image and os.path.exists(image)


async def test_move_aside_keeps_the_old_overlay_and_its_base_rooted(images, tmp_path):
    image = await built(images, nix_config(tmp_path, "e"))
    overlay = str(tmp_path / "vm-root.qcow2")
    await images.create_overlay(overlay, image, size=None, domain="vm", disk="root")
    kept = images.move_aside(overlay, domain="vm", disk="root")
    assert os.path.exists(kept) and not os.path.exists(overlay)
    assert ".replaced-" in kept
    assert await images.prune_roots(str(tmp_path), images.bases_of("vm")) == []  # the kept one needs its base
    collect_garbage()
    assert (await image_info(kept)).backing == image and os.path.exists(image)


async def test_purge_deletes_only_that_domains_overlays_then_roots_can_go(images, tmp_path):
    img_a = await built(images, nix_config(tmp_path, "f"))
    img_b = await built(images, nix_config(tmp_path, "g"))
    a = str(tmp_path / "a-root.qcow2")
    b = str(tmp_path / "b-root.qcow2")
    await images.create_overlay(a, img_a, size=None, domain="a", disk="root")
    await images.create_overlay(b, img_b, size=None, domain="b", disk="root")
    bases = images.bases_of("a") | images.bases_of("b")
    assert await images.purge("a") == [a]
    assert not os.path.exists(a) and os.path.exists(b)
    removed = await images.prune_roots(str(tmp_path), bases)
    assert [Path(r).name for r in removed] == [Path(store_root(img_a)).name]
    collect_garbage()
    assert os.path.exists(img_b) and not os.path.exists(img_a)


async def test_failed_build_reports_the_log_tail_and_backs_off(images, tmp_path):
    bad = tmp_path / "missing.nix"  # does not exist: nix-build fails
    images.request_build(str(bad))
    for _ in range(200):
        if images.build_state(str(bad)).phase == BuildPhase.failed:
            break
        await asyncio.sleep(0.05)
    state = images.build_state(str(bad))
    assert state.phase == BuildPhase.failed
    assert "missing.nix" in state.error and "No such file or directory" in state.error
    assert state.retry_at is not None


async def test_missing_build_command_says_so(tmp_path):
    images = Images(state_dir=str(tmp_path / "state"), build_command=("nixos-generate-not-installed", "-c", "{path}"),
                    retry_delay=60)
    images.request_build(str(tmp_path / "a.nix"))
    for _ in range(100):
        if images.build_state(str(tmp_path / "a.nix")).phase == BuildPhase.failed:
            break
        await asyncio.sleep(0.02)
    state = images.build_state(str(tmp_path / "a.nix"))
    assert state.phase == BuildPhase.failed
    assert state.error == "nixos-generate-not-installed: command not found (install it, or fix PATH)"


def test_two_overlays_moved_aside_within_one_second_are_both_kept(tmp_path):
    """Found by the simulator: the dated name has one-second resolution, and a rename onto
    an existing name replaces it silently; the second overlay moved aside must not."""
    images = Images(state_dir=str(tmp_path / "state"))
    overlay = tmp_path / "web-root.qcow2"
    kept = []
    for content in ("first", "second"):
        overlay.write_text(content)
        kept.append(images.move_aside(str(overlay), domain="web", disk="root"))
    assert len(set(kept)) == 2 and [Path(k).read_text() for k in kept] == ["first", "second"]
    assert not overlay.exists() and set(images.registry()) == set(kept)
