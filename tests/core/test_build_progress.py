"""What `nvirtd status` says while an image builds, from the lines nix writes."""

from __future__ import annotations

from daemon.core.build_progress import BuildProgress, describe

# nix-build's stderr for a NixOS image, shortened (the shape of nix 2.8 to 2.24)
NIX_BUILD = """these 3 derivations will be built:
  /nix/store/4sl01j0zzg0aplvzxpwy81gpaaz2i3v5-users-groups.json.drv
  /nix/store/rpxd1rvfk9fih85hkvcqs6z0avw35hyy-nixos-system-web-25.05.drv
  /nix/store/4wm1pi5hvhfpwic3x3g14zqrx5a25g0y-nixos-image-qemu.drv
these 2 paths will be fetched (10.50 MiB download, 52.10 MiB unpacked):
  /nix/store/aaaa1541a8r0mazqg65ab89zi3a8w157-linux-6.12
  /nix/store/bbbb1541a8r0mazqg65ab89zi3a8w157-systemd-257
copying path '/nix/store/aaaa1541a8r0mazqg65ab89zi3a8w157-linux-6.12' from 'https://cache.nixos.org'...
building '/nix/store/4sl01j0zzg0aplvzxpwy81gpaaz2i3v5-users-groups.json.drv'...
building '/nix/store/rpxd1rvfk9fih85hkvcqs6z0avw35hyy-nixos-system-web-25.05.drv'...
nixos-image-qemu> Formatting '/build/nixos.qcow2', fmt=qcow2 size=4294967296
"""


def fed(text: str, started_at: float = 1000.0) -> BuildProgress:
    progress = BuildProgress(started_at)
    for line in text.splitlines():
        progress.feed(line)
    return progress


def test_derivations_left_fetches_left_and_the_last_line():
    p = fed(NIX_BUILD)
    assert (p.to_build, p.started, p.to_fetch, p.fetched) == (3, 2, 2, 1)
    assert describe(p.as_json(), now=1000.0 + 185) == (
        "building 3 min, 1 of 3 derivations left, 1 of 2 paths to fetch: "
        "Formatting '/build/nixos.qcow2', fmt=qcow2 size=4294967296")


def test_one_derivation_and_a_build_that_does_not_count_up_front():
    assert fed("this derivation will be built:\n  /nix/store/x-a.drv\n").to_build == 1
    p = fed("building '/nix/store/hl5wpglmvr1g50abkxscg16mmw0kpnwj-image.drv'...\nimage> step 1\n")
    assert describe(p.as_json(), now=1012.0) == "building 12 s, 1 derivation started: step 1"


def test_long_builds_and_long_lines():
    p = fed("x" * 500)
    assert len(p.last_line) == 120
    assert describe(p.as_json(), now=1000.0 + 3 * 3600 + 120).startswith("building 3 h 2 min")
    assert describe(BuildProgress(1000.0).as_json(), now=1000.0) == "building 0 s"
