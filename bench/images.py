#!/usr/bin/env python3
"""20 VMs on one nix-built base: qcow2 overlays (nvirtd) versus full copies of the base.

The base is a real nix store path: tests/nix/fake-nixos-image.nix, with --argstr size
and a payload written into it, stands in for a NixOS image (no nixpkgs here). Both
approaches are measured in the same run on the same disk; the table shows time and
bytes actually allocated, and the ratios.

    .venv/bin/python bench/images.py [--vms 20] [--payload-mib 512]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import logs  # noqa: E402
from daemon.adapters.images import Images, find_image, parse_build_output  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NIX_ENV = {"NIX_CONFIG": "substituters =\nbuild-users-group =\nsandbox = false\n"}


def allocated(paths: list[Path]) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in paths)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def build_base(work: Path, payload_mib: int) -> str:
    """A nix-built qcow2 holding `payload_mib` of data (like an installed system)."""
    expr = work / "base.nix"
    expr.write_text(f'''
derivation {{
  name = "bench-nixos-image";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  nonce = "{work}";
  args = [ "-c" "mkdir $out && qemu-img create -q -f qcow2 $out/nixos.qcow2 4G && qemu-io -f qcow2 -c 'write -P 0x5a 0 {payload_mib}M' $out/nixos.qcow2 >/dev/null" ];
}}''')
    out = subprocess.run(["nix-build", str(expr), "--no-out-link"], capture_output=True, text=True, check=True,
                         env={**os.environ, **NIX_ENV})
    return find_image(parse_build_output(out.stdout))


async def overlays(images: Images, base: str, target: Path, vms: int) -> tuple[float, list[Path]]:
    t0 = time.perf_counter()
    paths = []
    for i in range(vms):
        path = target / f"vm{i:02d}-root.qcow2"
        await images.create_overlay(str(path), base, size=None, domain=f"vm{i:02d}", disk="root")
        paths.append(path)
    return time.perf_counter() - t0, paths


def copies(base: str, target: Path, vms: int, how: str) -> tuple[float, list[Path]]:
    t0 = time.perf_counter()
    paths = []
    for i in range(vms):
        path = target / f"vm{i:02d}-root.qcow2"
        if how == "cp":
            shutil.copyfile(base, path)
        else:
            subprocess.run(["qemu-img", "convert", "-O", "qcow2", base, str(path)], check=True)
        paths.append(path)
    return time.perf_counter() - t0, paths


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vms", type=int, default=20)
    p.add_argument("--payload-mib", type=int, default=512)
    args = p.parse_args()
    logs.configure("warning")
    with tempfile.TemporaryDirectory(prefix="nvirtd-images-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        base = build_base(work, args.payload_mib)
        build = time.perf_counter() - t0
        base_bytes = allocated([Path(base)])
        print(f"base image {base}: {human(base_bytes)} allocated, built in {build:.1f} s", flush=True)
        images = Images(state_dir=str(work / "state"), build_env=NIX_ENV)
        results = {}
        for name in ("overlays", "cp", "qemu-img convert"):
            target = work / name.replace(" ", "-")
            target.mkdir()
            if name == "overlays":
                seconds, paths = asyncio.run(overlays(images, base, target, args.vms))
            else:
                seconds, paths = copies(base, target, args.vms, "cp" if name == "cp" else "convert")
            results[name] = (seconds, allocated(paths))
            print(f"  {name}: {seconds:.2f} s, {human(results[name][1])}", flush=True)
        ov_s, ov_b = results["overlays"]
        ov_total = ov_b + base_bytes  # the overlays need the base once; copies do not
        print(f"\n{args.vms} VMs on one {human(base_bytes)} base (payload {args.payload_mib} MiB)\n")
        print("| approach | time | disk used | time vs overlays | disk vs overlays (incl. the base) |")
        print("|---|---|---|---|---|")
        print(f"| qcow2 overlays (nvirtd) | {ov_s:.2f} s | {human(ov_b)} + base {human(base_bytes)} | 1x | 1x |")
        for name in ("cp", "qemu-img convert"):
            s, b = results[name]
            print(f"| full copies ({name}) | {s:.2f} s | {human(b)} | {s / ov_s:.1f}x | {b / ov_total:.1f}x |")


if __name__ == "__main__":
    main()
