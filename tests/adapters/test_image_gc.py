"""Garbage collection of base images with the real nix: a root goes only when no overlay
(none moved aside either) uses its base, after the retention; nix-collect-garbage then
deletes exactly that store path and leaves every backing file in place."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from daemon.adapters import image_gc
from daemon.adapters.images import image_info, store_root
from tests.adapters import test_images
from tests.adapters.test_images import built, collect_garbage, nix_config
from tests.conftest import REPO, have, nix_env

pytestmark = [pytest.mark.nix, pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]


images = pytest.fixture(test_images.images.__wrapped__)  # the same fixture: Images on the real nix


def age(link: str, seconds: float) -> None:
    """As if the root had last been used `seconds` ago."""
    then = time.time() - seconds
    os.utime(link, (then, then), follow_symlinks=False)


async def test_only_the_unused_base_loses_its_root_and_gc_keeps_every_backing_file(images, tmp_path):
    used = await built(images, nix_config(tmp_path, "used"))
    aside_base = await built(images, nix_config(tmp_path, "aside"))
    unused = await built(images, nix_config(tmp_path, "unused"))
    folder = tmp_path / "img"
    live = str(folder / "a-root.qcow2")
    await images.create_overlay(live, used, size=None, domain="a", disk="root")
    moved = str(folder / "b-root.qcow2")
    await images.create_overlay(moved, aside_base, size=None, domain="b", disk="root")
    moved = images.move_aside(moved, domain="b", disk="root")  # kept aside: keeps its base
    for link in images.roots_dir.iterdir():
        age(str(link), 3 * 86400)

    found = await image_gc.collect(images, str(folder), retention=86400, dry_run=True)
    assert {r.store for r in found if r.removed} == {store_root(unused)}
    assert len(list(images.roots_dir.iterdir())) == 3  # a dry run removes nothing
    kept = await image_gc.collect(images, str(folder), retention=7 * 86400)
    assert not any(r.removed for r in kept)  # unused for 3 days, retention 7: kept

    found = await image_gc.collect(images, str(folder), retention=86400)
    assert {r.store for r in found if r.removed} == {store_root(unused)}
    users = {r.store: r.users for r in found}
    assert users[store_root(used)] == (live,) and users[store_root(aside_base)] == (moved,)
    collect_garbage()
    assert os.path.exists(used) and os.path.exists(aside_base) and not os.path.exists(unused)
    assert (await image_info(live)).backing == used and (await image_info(moved)).backing == aside_base
    # the roots in use were touched: their age starts again
    assert all(time.time() - os.lstat(r.link).st_mtime < 60 for r in found if r.users)


async def test_an_overlay_nvirtd_did_not_record_still_keeps_its_base(images, tmp_path):
    base = await built(images, nix_config(tmp_path, "unrecorded"))
    folder = tmp_path / "img"
    folder.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, str(folder / "x.qcow2")],
                   check=True)
    found = await image_gc.collect(images, str(folder), retention=0)
    assert [r.users for r in found] == [(str(folder / "x.qcow2"),)] and not found[0].removed


async def test_an_unreadable_registry_removes_nothing(images, tmp_path):
    await built(images, nix_config(tmp_path, "reg"))
    images.registry_path.parent.mkdir(parents=True, exist_ok=True)
    images.registry_path.write_text("{ half written")
    with pytest.raises(Exception, match="cannot be read"):
        await image_gc.collect(images, str(tmp_path / "img"), retention=0)
    assert len(list(images.roots_dir.iterdir())) == 1


def test_the_gc_command_shows_and_removes_roots(images, tmp_path):
    base = asyncio.run(built(images, nix_config(tmp_path, "cli")))
    state = str(images.roots_dir.parent)
    argv = [sys.executable, "-m", "daemon", "gc", "--state-dir", state, "--images-dir", str(tmp_path / "img")]
    env = {**os.environ, **nix_env()}
    shown = subprocess.run([*argv, "--dry-run", "--older-than", "0"], capture_output=True, text=True, env=env,
                           cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    assert f"would remove  {store_root(base)}" in shown.stdout and "would then free" in shown.stdout
    assert len(list(images.roots_dir.iterdir())) == 1
    recent = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)  # default: 7 days
    assert "kept until unused for 7.0 d" in recent.stdout and len(list(images.roots_dir.iterdir())) == 1
    done = subprocess.run([*argv, "--older-than", "0", "--json"], capture_output=True, text=True, env=env, cwd=REPO)
    assert json.loads(done.stdout)[0]["removed"] is True and not any(images.roots_dir.iterdir())
    wrong = subprocess.run([*argv, "--older-than", "soon"], capture_output=True, text=True, env=env, cwd=REPO)
    assert wrong.returncode == 2 and "is not a duration" in wrong.stderr
