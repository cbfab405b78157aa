#!/usr/bin/env python3
"""A boot storm on the real libvirtd with QEMU: N guests defined and started from nothing.

The guests boot no OS (`type='kvm'` reaches `running` without one here), so the time is
QEMU's and libvirt's setting up, the part a host feels at boot. Baselines from the same
run: a plain libvirt-python define+start loop, in 1, 4, 8, 16 and 32 threads, and with
every define first, then every start in 16 threads (the 1-thread loop in the first round
only, unless --every-round); then nvirtd as a fresh process
(process start -> all running) without a cap and with `--start-concurrency` 4 and 8.
The order of the runs rotates each round; figures are medians. Host load: the mean CPU
busy share over the run (from /proc/stat), and the most guests in libvirt's "starting"
state at once as sampled every 20 ms.

    .venv/bin/python bench/bootstorm.py [--domains 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.coldstart import compile_bytecode  # noqa: E402
from daemon.core.domain_xml import RenderContext, render_domain  # noqa: E402
from daemon.core.spec import Domain, VirtType  # noqa: E402

URI = "qemu:///system"
PREFIX = "storm"
SLOW = "loop, 1 thread"


def spec() -> dict:
    return {"memory": {"amount": 64, "unit": "MiB"}, "virtType": "kvm"}


def xmls(n: int) -> list[str]:
    ctx = RenderContext(VirtType.kvm, "/var/lib/libvirt/images", "/var/lib/nvirtd")
    return [render_domain(f"{PREFIX}{i:02d}", Domain.model_validate(spec()), ctx, source_file="b.json").xml
            for i in range(n)]


def wipe(conn: libvirt.virConnect) -> None:
    def remove(dom: libvirt.virDomain) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
    with ThreadPoolExecutor(16) as pool:  # a QEMU takes a while to go: not one after the other
        list(pool.map(remove, [d for d in conn.listAllDomains() if d.name().startswith(PREFIX)]))


def running(conn: libvirt.virConnect) -> int:
    return sum(1 for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING) if d.name().startswith(PREFIX))


def cpu_busy() -> tuple[int, int]:
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Load:
    """Samples how many guests are starting at once, and the CPU's busy share."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn, self.most, self.stop = conn, 0, threading.Event()
        self.c0 = cpu_busy()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            with contextlib.suppress(libvirt.libvirtError):
                starting = sum(1 for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)
                               if d.name().startswith(PREFIX))
                self.most = max(self.most, starting)

    def done(self) -> tuple[int, float]:
        self.stop.set()
        self.thread.join()
        busy, total = (b - a for a, b in zip(self.c0, cpu_busy()))
        return self.most, 100.0 * busy / max(total, 1)


def raw(domains: list[str], threads: int, defines_first: bool, workdir: Path) -> float:
    xml_dir = workdir / "xml"
    xml_dir.mkdir(exist_ok=True)
    for i, x in enumerate(domains):
        (xml_dir / f"{i:03d}.xml").write_text(x)
    argv = [sys.executable, str(ROOT / "bench" / "raw_loop.py"), URI, str(xml_dir), "--threads", str(threads)]
    t0 = time.perf_counter()
    subprocess.run(argv + (["--defines-first"] if defines_first else []), check=True)
    return time.perf_counter() - t0


def nvirtd(n: int, cap: int, conn: libvirt.virConnect, workdir: Path) -> float:
    config, state = workdir / f"config{cap}", workdir / f"state{cap}-{time.monotonic_ns()}"
    config.mkdir(exist_ok=True, mode=0o755)
    (config / "b.json").write_text(json.dumps({"domains": {f"{PREFIX}{i:02d}": spec() for i in range(n)}}))
    argv = [sys.executable, "-m", "daemon", "run", "--connect", URI, "--config-dir", str(config),
            "--state-dir", str(state), "--images-dir", str(state / "images"),
            "--no-trust-checks", "--start-concurrency", str(cap)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        while running(conn) < n:
            if proc.poll() is not None:
                raise RuntimeError(f"nvirtd exited with {proc.returncode}")
            time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--domains", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--every-round", action="store_true", help="the 1-thread loop in every round, not only the first")
    args = p.parse_args()
    compile_bytecode()
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(URI)
    domains = xmls(args.domains)
    runs: dict[str, list[tuple[float, int, float]]] = {}
    rounds: dict[int, dict[str, float]] = {}
    kinds = [(SLOW, lambda w: raw(domains, 1, False, w)),
             *[(f"loop, {t} threads", lambda w, t=t: raw(domains, t, False, w)) for t in (4, 8, 16, 32)],
             ("all defines, then starts in 16 threads", lambda w: raw(domains, 16, True, w)),
             ("nvirtd, no cap", lambda w: nvirtd(args.domains, 0, conn, w)),
             ("nvirtd --start-concurrency 8", lambda w: nvirtd(args.domains, 8, conn, w)),
             ("nvirtd --start-concurrency 4", lambda w: nvirtd(args.domains, 4, conn, w))]
    with tempfile.TemporaryDirectory(prefix="nvirtd-storm-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        for r in range(args.rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
            for name, run in order:
                if name == SLOW and r > 0 and not args.every_round:
                    continue  # 40 s a round, and never the best: its figure is round 1's
                wipe(conn)
                time.sleep(1.0)
                load = Load(conn)
                seconds = run(work)
                most, busy = load.done()
                assert running(conn) == args.domains, name
                runs.setdefault(name, []).append((seconds, most, busy))
                rounds.setdefault(r, {})[name] = seconds
                print(f"round {r + 1}: {name}: {seconds:.1f} s, most starting at once {most}, CPU {busy:.0f} %",
                      flush=True)
        wipe(conn)
    # each run against the best raw loop of its own round, then the median of those ratios:
    # QEMU's start time here drifts by a third between rounds
    best = {r: min(t for k, t in got.items() if not k.startswith("nvirtd")) for r, got in rounds.items()}
    print(f"\n{args.domains} guests on {URI}, medians of {args.rounds} rounds (order rotated); 'vs best raw loop' "
          "is the median of each round's ratio to that round's best raw loop\n")
    print("| how | time | vs best raw loop | most starting at once | CPU busy |\n|---|---|---|---|---|")
    for name, _ in kinds:
        v = runs[name]
        t = statistics.median(s for s, _, _ in v)
        ratios = [got[name] / best[r] for r, got in rounds.items() if name in got]
        print(f"| {name} | {t:.1f} s ({', '.join(f'{s:.1f}' for s, _, _ in v)}) | {statistics.median(ratios):.2f}x "
              f"({', '.join(f'{x:.2f}' for x in ratios)}) | {statistics.median(m for _, m, _ in v):.0f} | "
              f"{statistics.median(b for _, _, b in v):.0f} % |")


if __name__ == "__main__":
    main()
