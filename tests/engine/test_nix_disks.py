"""Domains on nix-built bases, end to end: test driver + real nix + real qemu-img."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from daemon.adapters.images import image_info, store_root
from tests.adapters.test_images import build_command, collect_garbage, nix_config
from tests.conftest import domain, have, nix_env, write_json
from tests.engine.test_reconcile import state, wait_for

pytestmark = [pytest.mark.nix, pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]


@pytest.fixture
def nix_settings(settings, tmp_path, monkeypatch):
    for key, value in nix_env().items():
        monkeypatch.setenv(key, value)
    return replace(settings, build_command=build_command(tmp_path / "builds.log"))


def nix_domain(cfg: str, **nix) -> dict:
    disk = {"type": "nix", "path": cfg, **({"nix": nix} if nix else {})}
    return domain(disks={"root": disk})


def overlay(dirs, name: str) -> Path:
    return dirs["images"] / f"{name}-root.qcow2"


async def test_nix_domain_gets_an_overlay_on_a_rooted_base(dirs, nix_settings, start_daemon, fresh_libvirt, tmp_path):
    cfg = nix_config(tmp_path, "web")
    write_json(dirs["config"] / "a.json", {"domains": {"web": nix_domain(cfg, size=1, unit="G")}})
    d = await start_daemon(nix_settings)
    await wait_for(lambda: "web" in [x.name() for x in fresh_libvirt.listAllDomains()], 30, "web defined")
    await d.settle(30)
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    info = await image_info(str(overlay(dirs, "web")))
    assert info.backing.startswith("/nix/store/") and info.virtual_size == 2**30
    assert (dirs["state"] / "gcroots" / Path(store_root(info.backing)).name).is_symlink()
    assert d.entry("web").disks["root"]["backing"] == info.backing
    assert str(overlay(dirs, "web")) in fresh_libvirt.lookupByName("web").XMLDesc(0)


async def test_two_domains_on_one_configuration_share_one_build_and_base(dirs, nix_settings, start_daemon, fresh_libvirt, tmp_path):
    cfg = nix_config(tmp_path, "shared")
    write_json(dirs["config"] / "a.json", {"domains": {"a": nix_domain(cfg), "b": nix_domain(cfg)}})
    d = await start_daemon(nix_settings)
    await d.settle(30)
    a, b = await image_info(str(overlay(dirs, "a"))), await image_info(str(overlay(dirs, "b")))
    assert a.backing == b.backing
    assert (tmp_path / "builds.log").read_text().splitlines() == [cfg]
    assert state(fresh_libvirt, "a") == state(fresh_libvirt, "b") == libvirt.VIR_DOMAIN_RUNNING


async def test_new_image_does_not_replace_the_overlay_by_default(dirs, nix_settings, start_daemon, fresh_libvirt, tmp_path):
    cfg = nix_config(tmp_path, "web")
    write_json(dirs["config"] / "a.json", {"domains": {"web": nix_domain(cfg)}})
    d = await start_daemon(nix_settings)
    await d.settle(30)
    path = overlay(dirs, "web")
    before = (path.stat().st_ino, (await image_info(str(path))).backing)
    Path(cfg).write_text(Path(cfg).read_text().replace('"web"', '"web2"'))  # the configuration changes
    await d.daemon.reload(explicit=True)  # systemctl reload: re-evaluate images
    await wait_for(lambda: "image-outdated" in d.entry("web").conditions, 30, "image-outdated")
    assert (path.stat().st_ino, (await image_info(str(path))).backing) == before
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    collect_garbage()
    assert os.path.exists(before[1]), "the base the overlay still uses must stay rooted"


async def test_recreate_policy_moves_the_old_overlay_aside_and_restarts(dirs, nix_settings, start_daemon, fresh_libvirt, tmp_path):
    cfg = nix_config(tmp_path, "web")
    write_json(dirs["config"] / "a.json", {"domains": {"web": nix_domain(cfg, onImageChange="recreate")}})
    d = await start_daemon(nix_settings)
    await d.settle(30)
    old_backing = (await image_info(str(overlay(dirs, "web")))).backing
    Path(cfg).write_text(Path(cfg).read_text().replace('"web"', '"web2"'))
    await d.daemon.reload(explicit=True)
    await wait_for(lambda: any(".replaced-" in p.name for p in dirs["images"].iterdir()), 30, "old overlay kept")
    await d.settle(30)
    kept = [p for p in dirs["images"].iterdir() if ".replaced-" in p.name]
    assert len(kept) == 1 and (await image_info(str(kept[0]))).backing == old_backing
    new_backing = (await image_info(str(overlay(dirs, "web")))).backing
    assert new_backing != old_backing
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    assert d.hv.mutations["shutdown"] >= 1
    collect_garbage()
    assert os.path.exists(old_backing) and os.path.exists(new_backing)


async def test_restart_with_nix_domains_running_makes_zero_mutations(dirs, nix_settings, start_daemon, fresh_libvirt, tmp_path):
    cfg = nix_config(tmp_path, "web")
    write_json(dirs["config"] / "a.json", {"domains": {"web": nix_domain(cfg)}})
    first = await start_daemon(nix_settings)
    await first.settle(30)
    first.daemon.stop()
    await first.task
    second = await start_daemon(nix_settings)
    await second.settle(30)  # includes the background re-evaluation of the image
    assert second.hv.mutation_count == 0, second.hv.mutations
    assert second.entry("web").conditions == []


async def test_garbage_collected_base_is_rebuilt_before_the_domain_starts(dirs, nix_settings, start_daemon, fresh_libvirt, tmp_path):
    cfg = nix_config(tmp_path, "web")
    write_json(dirs["config"] / "a.json", {"domains": {"web": nix_domain(cfg)}})
    d = await start_daemon(nix_settings)
    await d.settle(30)
    base = (await image_info(str(overlay(dirs, "web")))).backing
    inode = overlay(dirs, "web").stat().st_ino
    for link in (dirs["state"] / "gcroots").iterdir():
        link.unlink()
    collect_garbage()
    assert not os.path.exists(base)
    d.daemon.images.invalidate()
    fresh_libvirt.lookupByName("web").destroy()
    await wait_for(lambda: state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING, 30, "restarted")
    assert os.path.exists(base), "started before its base image was back"
    assert overlay(dirs, "web").stat().st_ino == inode  # the overlay was kept


async def test_a_flake_disk_is_built_with_its_progress_in_status(dirs, settings, start_daemon, fresh_libvirt,
                                                                  tmp_path, monkeypatch):
    """`nix: {flake: "DIR#web"}`: nix build of nixosConfigurations.web, the build's progress in
    status.json (and the table) while it runs, then an overlay on the rooted result."""
    import platform

    from daemon import status as status_mod
    from tests.adapters.test_image_builders import FLAKE
    for key, value in nix_env().items():
        monkeypatch.setenv(key, value)
    flake = tmp_path / "hosts"
    flake.mkdir()
    slow = FLAKE.replace("set -e; echo", "set -e; echo started; sleep 2; echo")  # long enough to be seen
    (flake / "flake.nix").write_text(slow.replace("MARKER", str(tmp_path)).replace("SYSTEM", f"{platform.machine()}-linux"))
    d = await start_daemon(settings)  # (it waits for builds to end: the domain comes after)
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(disks={"root": {
        "type": "nix", "nix": {"flake": f"{flake}#web", "size": 1, "unit": "G"}}})}})
    await d.daemon.reload(explicit=False)
    installable = f"{flake}#nixosConfigurations.web.config.system.build.images.qemu"
    await wait_for(lambda: d.daemon.status.daemon.get("builds", {}).get(installable, {}).get("last_line") == "started",
                   30, "the build's first line")
    build = d.daemon.status.daemon["builds"][installable]
    assert build["domains"] == ["web"] and build["last_line"] == "started"
    d.daemon.status.flush()
    table = status_mod.render_table(status_mod.load(str(dirs["state"])))
    assert "image builds:" in table and f"{installable}  (for web)" in table and ": started" in table
    assert d.entry("web").phase == "building"
    await d.settle(60)
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING
    info = await image_info(str(overlay(dirs, "web")))
    assert info.backing.endswith("/nixos-image-qemu.qcow2") and info.virtual_size == 2**30
    assert d.daemon.status.daemon["builds"] == {}
