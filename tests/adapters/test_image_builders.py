"""Which builder builds a nix disk, run for real: `nix build` of a flake, nixpkgs' image
builder through `nix-build '<nixpkgs/nixos>'`, nixos-generate where nixpkgs is older,
and a clear error where neither is there.

These machines have no nixpkgs. What stands in for it is a directory on NIX_PATH with
the two files nvirtd relies on: `nixos/default.nix` (here: a configuration's
`config.system.build.images.qemu` is tests/nix/fake-nixos-image.nix) and the marker
`nixos/modules/image/images.nix` (nixpkgs 25.05 and later). nix, nix-build, the store,
the GC roots and qemu-img are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import platform
from pathlib import Path

import pytest

from daemon.adapters.images import Images, image_info
from daemon.core.observed import BuildPhase
from tests.adapters.test_images import FAKE, nix_config
from tests.conftest import have, nix_env

pytestmark = [pytest.mark.nix, pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]

FLAKE = """{
  outputs = { self }: {
    nixosConfigurations.web.config.system.build.images.qemu = derivation {
      name = "nixos-image-qemu-web";
      system = "SYSTEM";  # flakes evaluate purely: no builtins.currentSystem
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      marker = "MARKER";
      args = [ "-c" "set -e; echo making the image of $marker; mkdir -p $out; qemu-img create -q -f qcow2 $out/nixos-image-qemu.qcow2 64M" ];
    };
  };
}
"""


def stub_nixpkgs(root: Path, *, with_images: bool) -> Path:
    nixos = root / "nixpkgs" / "nixos"
    nixos.mkdir(parents=True)
    (nixos / "default.nix").write_text(
        "{ configuration ? <nixos-config> }: { config.system.build.images.qemu = "
        f"import {FAKE} {{ inherit configuration; }}; }}\n")
    if with_images:
        (nixos / "modules" / "image").mkdir(parents=True)
        (nixos / "modules" / "image" / "images.nix").write_text("{ }\n")
    return root / "nixpkgs"


def images_with(tmp_path: Path, **env: str) -> tuple[Images, list[str], list[dict]]:
    done: list[str] = []
    seen: list[dict] = []
    build_env = {**nix_env(), **env}
    images = Images(state_dir=str(tmp_path / "state"), on_built=done.append, retry_delay=30, build_env=build_env)
    images.on_progress = lambda: seen.append(images.progress())
    return images, done, seen


async def finished(images: Images, source: str, *, flake: bool = False, timeout: float = 60):
    images.request_build(source, flake=flake)
    for _ in range(int(timeout * 20)):
        state = images.build_state(source)
        if state.phase in (BuildPhase.built, BuildPhase.failed):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError("the build did not finish")


async def test_a_flake_output_is_built_with_nix_build_and_rooted(tmp_path):
    flake = tmp_path / "hosts"
    flake.mkdir()
    (flake / "flake.nix").write_text(FLAKE.replace("MARKER", str(tmp_path)).replace("SYSTEM", f"{platform.machine()}-linux"))
    images, done, seen = images_with(tmp_path)
    installable = f"{flake}#nixosConfigurations.web.config.system.build.images.qemu"
    state = await finished(images, installable, flake=True)
    assert state.phase == BuildPhase.built, state.error
    assert state.image.endswith("/nixos-image-qemu.qcow2") and state.image.startswith("/nix/store/")
    assert (await image_info(state.image)).format == "qcow2"
    assert images.is_rooted(state.image) and done == [installable]
    # its progress, while it ran: the builder's own last line, without nix's "name> " prefix
    lines = [p[installable]["last_line"] for p in seen if installable in p]
    assert f"making the image of {tmp_path}" in lines
    assert images.progress() == {}  # nothing runs any more


async def test_a_configuration_file_is_built_by_the_nixpkgs_image_builder(tmp_path):
    nixpkgs = stub_nixpkgs(tmp_path, with_images=True)
    images, _, _ = images_with(tmp_path, NIX_PATH=f"nixpkgs={nixpkgs}")
    cfg = nix_config(tmp_path, "web")
    state = await finished(images, cfg)
    assert state.phase == BuildPhase.built, state.error
    assert images.builders.describe().startswith("nix-build '<nixpkgs/nixos>' -A config.system.build.images.qemu")
    assert Path(state.image).parent.joinpath("configuration.nix").read_text() == Path(cfg).read_text()


async def test_an_older_nixpkgs_falls_back_to_an_installed_nixos_generate(tmp_path):
    nixpkgs = stub_nixpkgs(tmp_path, with_images=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    generate = bin_dir / "nixos-generate"
    calls = tmp_path / "generate.log"
    # nixos-generate's interface (-f FORMAT -c CONFIG); it prints the result like the real one
    generate.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                        f'exec nix-build {FAKE} --no-out-link --arg configuration "$4"\n')
    generate.chmod(0o755)
    images, _, _ = images_with(tmp_path, NIX_PATH=f"nixpkgs={nixpkgs}", PATH=f"{bin_dir}:{os.environ['PATH']}")
    cfg = nix_config(tmp_path, "web")
    state = await finished(images, cfg)
    assert state.phase == BuildPhase.built, state.error
    assert calls.read_text().split() == ["-f", "qcow", "-c", cfg]
    assert images.builders.describe() == "nixos-generate -f qcow"


async def test_without_either_builder_the_build_fails_saying_what_to_do(tmp_path):
    nixpkgs = stub_nixpkgs(tmp_path, with_images=False)
    images, done, _ = images_with(tmp_path, NIX_PATH=f"nixpkgs={nixpkgs}", PATH="/usr/bin:/bin")
    cfg = nix_config(tmp_path, "web")
    state = await finished(images, cfg)
    assert state.phase == BuildPhase.failed and done == [cfg]
    assert "nixos/modules/image/images.nix" in state.error and "nixos-generate is not installed" in state.error
    assert "--build-command" in state.error


async def test_a_reload_during_a_build_evaluates_it_again_once_it_ends(tmp_path):
    """Never two evaluations of one source at once, and never a result older than the reload."""
    images, done, _ = images_with(tmp_path)
    log = tmp_path / "runs.log"
    images.builders.custom = ("sh", "-c", f'echo run >> {log}; sleep 1; exec nix-build {FAKE} --no-out-link '
                              '--arg configuration "$0"', "{path}")
    cfg = nix_config(tmp_path, "web")
    images.request_build(cfg)
    await asyncio.sleep(0.3)
    images.invalidate({cfg})  # systemctl reload while it builds
    images.request_build(cfg)  # a pass asks again meanwhile: still one build
    while not done:
        await asyncio.sleep(0.05)
    assert log.read_text().count("run") == 1
    assert images.build_state(cfg).phase == BuildPhase.idle  # not taken as current: built again on request
    state = await finished(images, cfg)
    assert state.phase == BuildPhase.built and log.read_text().count("run") == 2
