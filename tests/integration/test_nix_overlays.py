"""Domains on overlays of a nix-built base, on the real libvirtd."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daemon.adapters.images import image_info
from tests.adapters.test_images import build_command, collect_garbage, nix_config
from tests.conftest import domain, have, nix_env, write_json
from tests.engine.test_reconcile import wait_for
from tests.integration.test_system_libvirtd import running

pytestmark = [pytest.mark.integration, pytest.mark.nix,
              pytest.mark.skipif(not have("nix-build"), reason="nix-build not installed")]


async def test_domains_share_one_nix_base_and_run_on_their_own_overlays(dirs, system_settings, start_daemon,
                                                                       system_conn, tmp_path, monkeypatch):
    for key, value in nix_env().items():
        monkeypatch.setenv(key, value)
    cfg = nix_config(tmp_path, "shared")
    names = ["nvt-n1", "nvt-n2", "nvt-n3"]
    write_json(dirs["config"] / "a.json", {"domains": {n: domain(
        96, shutdownTimeout=1, disks={"root": {"type": "nix", "path": cfg, "nix": {"size": 1, "unit": "G"}}})
        for n in names}})
    d = await start_daemon(replace(system_settings, build_command=build_command(tmp_path / "builds.log")))
    await wait_for(lambda: all(running(system_conn, n) for n in names), 60, "all running")
    infos = [await image_info(f"{system_settings.images_dir}/{n}-root.qcow2") for n in names]
    assert len({i.backing for i in infos}) == 1 and infos[0].backing.startswith("/nix/store/")
    assert (tmp_path / "builds.log").read_text().count("\n") == 1  # one build for three domains
    base = await image_info(infos[0].backing)
    total = sum(i.actual_size for i in infos)
    assert total < base.actual_size * len(names) + 3 * 2**20  # overlays store only their own changes
    await d.settle()
    report = {n: d.entry(n).disks["root"] for n in names}
    assert all(r["backing"] == infos[0].backing and r["actual_size"] > 0 for r in report.values())
    collect_garbage()  # the base is in use: it must survive
    for n in names:
        system_conn.lookupByName(n).destroy()
    await wait_for(lambda: all(running(system_conn, n) for n in names), 60, "restarted on the kept base")
