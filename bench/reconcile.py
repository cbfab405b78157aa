#!/usr/bin/env python3
"""nvirtd at 1,000 domains, each figure next to a baseline measured in the same run.

Runs against libvirt's test driver inside the real libvirtd (test+unix:///default),
so every call is a real RPC, as on a production host. A "keeper" connection stays
open for the whole run: the test driver's state lives as long as one connection does.

    .venv/bin/python bench/reconcile.py [--domains 1000] [--idle-seconds 60]

Prints a table; nothing here is asserted (see docs/performance.md for figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import logs  # noqa: E402
from daemon.adapters.hypervisor import register_event_loop  # noqa: E402
from daemon.app import Daemon  # noqa: E402
from daemon.core.domain_xml import RenderContext, render_domain  # noqa: E402
from daemon.core.spec import Domain, VirtType  # noqa: E402
from daemon.settings import Settings  # noqa: E402

URI = "test+unix:///default"
ROWS: list[tuple[str, str, str, str, str]] = []


def row(metric: str, value: str, baseline: str = "", ratio: str = "", target: str = "") -> None:
    ROWS.append((metric, value, baseline, ratio, target))
    print(f"  {metric}: {value}" + (f"  (baseline {baseline}, ratio {ratio})" if baseline else ""), flush=True)


def spec(i: int, memory: int = 128) -> dict:
    return {"domains": {f"bench{i:04d}": {"memory": {"amount": memory, "unit": "MiB"}}}}


def wipe(conn: libvirt.virConnect) -> None:
    for dom in conn.listAllDomains():
        if dom.name().startswith("bench"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


def rendered_xmls(n: int) -> list[tuple[str, str]]:
    ctx = RenderContext(VirtType.qemu, "/var/lib/libvirt/images", "/var/lib/nvirtd")
    out = []
    for i in range(n):
        name, body = next(iter(spec(i)["domains"].items()))
        out.append((name, render_domain(name, Domain.model_validate(body), ctx, source_file=f"{name}.json").xml))
    return out


def floor_loop(conn: libvirt.virConnect, xmls: list[tuple[str, str]]) -> float:
    t0 = time.perf_counter()
    for _name, xml in xmls:
        conn.defineXML(xml).create()
    return time.perf_counter() - t0


def virsh_loop(xmls: list[tuple[str, str]], workdir: Path) -> float:
    files = []
    for name, xml in xmls:
        path = workdir / f"{name}.xml"
        path.write_text(xml)
        files.append((name, path))
    t0 = time.perf_counter()
    for name, path in files:  # what the NixOS module's per-VM units did
        subprocess.run(["virsh", "-q", "-c", URI, "define", str(path)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["virsh", "-q", "-c", URI, "start", name], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def active_bench(conn: libvirt.virConnect) -> int:
    """Running bench domains: one cheap RPC (a count), so that polling it every few
    milliseconds does not slow down what it measures (the driver's own `test` runs too)."""
    return conn.numOfDomains() - 1


async def wait_until(predicate, timeout: float, step: float = 0.005) -> float:
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError
        await asyncio.sleep(step)
    return time.perf_counter() - t0


async def settle(daemon: Daemon) -> None:
    quiet = 0
    while quiet < 10:
        quiet = quiet + 1 if daemon.queue.idle(0.5) else 0
        await asyncio.sleep(0.01)


async def cold_start(settings: Settings, conn, n: int) -> tuple[Daemon, asyncio.Task, float]:
    daemon = Daemon(settings)
    t0 = time.perf_counter()
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: active_bench(conn) == n, 600, 0.02)
    return daemon, task, time.perf_counter() - t0


async def in_process(args, conn, workdir: Path, floor: float) -> float:
    config = workdir / "config"
    config.mkdir(mode=0o755)
    for i in range(args.domains):
        (config / f"bench{i:04d}.json").write_text(json.dumps(spec(i)))
    settings = Settings(uri=URI, config_dir=str(config), state_dir=str(workdir / "state"),
                        images_dir=str(workdir / "images"), watch=True, workers=args.workers, resync_interval=3600)
    colds = []
    for attempt in range(args.repeat):
        daemon, task, seconds = await cold_start(settings, conn, args.domains)
        colds.append(seconds)
        if attempt < args.repeat - 1:
            daemon.stop()
            await task
            wipe(conn)
    cold = statistics.median(colds)
    await daemon.ready.wait()
    await settle(daemon)
    await daemon.hv.settle()  # the fingerprint records written after the starts (as before READY=1)
    runs = ", ".join(f"{c:.2f}" for c in colds)
    row(f"cold convergence, {args.domains} domains (median of {args.repeat})", f"{cold:.2f} s (runs {runs})",
        f"{floor:.2f} s (plain libvirt loop, runs {args.floor_runs})", f"{cold / floor:.2f}x", "<= 1.5x")
    row("  mutating calls for it", str(daemon.hv.mutation_count))
    row("  adapter calls in all, reads included (1-3 RPCs each)", str(daemon.hv.calls))

    before_m, before_c = daemon.hv.mutation_count, daemon.hv.calls
    times = []
    for _ in range(5):
        t = time.perf_counter()
        await daemon.reload(explicit=False)
        await wait_until(lambda: daemon.queue.idle(0.001), 30)
        times.append(time.perf_counter() - t)
    row("no-op reload, wall time (median of 5)", f"{statistics.median(times) * 1000:.0f} ms", target="< 500 ms")
    row("no-op reload, mutating calls", str(daemon.hv.mutation_count - before_m), target="0")
    row("no-op reload, libvirt calls of any kind", str(daemon.hv.calls - before_c))

    before = dict(daemon.hv.mutations)
    target_file = config / "bench0500.json"
    target_file.write_text(json.dumps(spec(500, memory=256)))
    t = time.perf_counter()
    await daemon.reload(explicit=True)
    await wait_until(lambda: daemon.hv.mutations["define_domain"] > before.get("define_domain", 0), 10)
    one = time.perf_counter() - t
    await settle(daemon)
    touched = daemon.hv.mutations["define_domain"] - before.get("define_domain", 0)
    row("one file of 1,000 changed: reload -> redefined", f"{one * 1000:.0f} ms")
    row("  domains touched", str(touched), target="1")

    latencies = []
    for k in range(20):
        count = daemon.hv.mutations["define_domain"]
        t = time.perf_counter()
        tmp = config / ".bench0700.json.tmp"
        tmp.write_text(json.dumps(spec(700, memory=200 + k)))
        os.replace(tmp, config / "bench0700.json")  # an editor's save
        await wait_until(lambda: daemon.hv.mutations["define_domain"] > count, 10, 0.001)
        latencies.append(time.perf_counter() - t)
        await settle(daemon)
    latencies.sort()
    row("file saved -> domain redefined (watcher, 20 saves)",
        f"median {statistics.median(latencies) * 1000:.0f} ms, p95 {latencies[int(0.95 * len(latencies)) - 1] * 1000:.0f} ms",
        target=f"debounce {settings.debounce * 1000:.0f} ms included")
    daemon.stop()
    await task
    return cold


def subprocess_figures(args, conn, workdir: Path) -> None:
    sock_path = workdir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(120)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    argv = [sys.executable, "-m", "daemon", "run", "--connect", URI, "--config-dir", str(workdir / "config"),
            "--state-dir", str(workdir / "state2"), "--images-dir", str(workdir / "images")]  # the default log level, info
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.DEVNULL)
    try:
        while not sock.recv(4096).startswith(b"READY=1"):
            pass
        restart = time.perf_counter() - t0
        time.sleep(1.0)
        row(f"daemon restart with {args.domains} running: start -> READY=1", f"{restart:.2f} s")
        rss_kib = int(next(line.split()[1] for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmRSS")))
        row(f"daemon RSS at {args.domains} domains", f"{rss_kib / 1024:.0f} MiB")
        tick = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        c0, w0 = cpu(), time.perf_counter()
        time.sleep(args.idle_seconds)
        used, wall = cpu() - c0, time.perf_counter() - w0
        row(f"idle CPU over {args.idle_seconds:.0f} s", f"{100 * used / wall:.3f} %", target="< 0.1 %")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        sock.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--domains", type=int, default=1000)
    p.add_argument("--workers", type=int, default=Settings().workers)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--virsh-domains", type=int, default=None, help="default: all of --domains")
    p.add_argument("--repeat", type=int, default=3, help="runs of the floor and of nvirtd's cold start (median)")
    args = p.parse_args()
    logs.configure("warning")
    libvirt.registerErrorHandler(lambda *_: None, None)

    async def run() -> None:
        register_event_loop()
        keeper = libvirt.open(URI)  # keeps the driver's state alive for the whole run
        wipe(keeper)
        with tempfile.TemporaryDirectory(prefix="nvirtd-bench-") as tmp:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)
            xmls = rendered_xmls(args.domains)
            print(f"nvirtd benchmark: {args.domains} domains on {URI}, {os.cpu_count()} CPUs", flush=True)
            floors = []
            for _ in range(args.repeat):
                floors.append(floor_loop(keeper, xmls))
                wipe(keeper)
            floor = statistics.median(floors)
            args.floor_runs = ", ".join(f"{f:.2f}" for f in floors)
            row(f"baseline: plain libvirt-python define+start loop (median of {args.repeat})", f"{floor:.2f} s")
            cold = await in_process(args, keeper, workdir, floor)
            subprocess_figures(args, keeper, workdir)  # restarts on the 1,000 running domains
            wipe(keeper)
            # the virsh baseline comes last: 2,000 virsh processes leave libvirtd slower for a while
            nv = args.virsh_domains or args.domains
            virsh = virsh_loop(xmls[:nv], workdir)
            virsh_full = virsh * args.domains / nv
            row(f"baseline: virsh define + virsh start loop ({nv} domains" + (", scaled" if nv != args.domains else "")
                + ")", f"{virsh_full:.2f} s")
            row("cold convergence vs virsh loop", f"{virsh_full / cold:.1f}x faster", target=">= 10x")
            wipe(keeper)
        keeper.close()

    asyncio.run(run())
    print("\n| metric | nvirtd | baseline | ratio | target |\n|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
