#!/usr/bin/env python3
"""Cold start and restart as users feel them: from process start, against baselines of the same run.

libvirt's test driver inside the real libvirtd (test+unix:///default), one domain per
file. For each size: the plain define+create loop in this process, the same loop as a
fresh Python process reading the domains' XML files (the issue's baseline), the floor of
nvirtd's guarantees (a fresh process making only the 5 calls a new domain costs, with
events, in nvirtd's 24 threads, the records after the starts as nvirtd writes them:
bench/raw_loop.py --guarantees; process start -> all running), and nvirtd as a fresh
process (process start -> every domain running); then a
restart of nvirtd on the running domains (process start -> READY=1, mutating calls),
and its RSS.

    .venv/bin/python bench/coldstart.py [--sizes 100,1000,5000] [--repeat 3]

Prints a table; nothing is asserted (docs/performance.md holds the figures).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reconcile import rendered_xmls, spec, wipe  # noqa: E402

URI = "test+unix:///default"
WORKERS = 24  # nvirtd's default (settings.workers)


def compile_bytecode() -> None:
    """nvirtd as installed runs from bytecode (pip and nix compile it); an editable checkout
    under PYTHONDONTWRITEBYTECODE would compile every module at each start."""
    compileall.compile_dir(str(ROOT / "daemon"), quiet=1)


def running(conn: libvirt.virConnect) -> int:
    return conn.numOfDomains() - 1  # the driver's own `test` runs too


def wait_running(conn: libvirt.virConnect, n: int, t0: float, proc: subprocess.Popen | None = None) -> float:
    while running(conn) < n:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before converging")
        time.sleep(0.005)
    return time.perf_counter() - t0


def raw_in_process(conn, xmls) -> float:
    t0 = time.perf_counter()
    for _name, xml in xmls:
        conn.defineXML(xml).create()
    return time.perf_counter() - t0


def raw_fresh(xml_dir: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "bench" / "raw_loop.py"), URI, str(xml_dir), *extra], check=True)
    return time.perf_counter() - t0


def floor_fresh(conn, n: int, xml_dir: Path) -> float:
    """The guarantees floor, process start -> all running (its records come after, as nvirtd's do)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "raw_loop.py"), URI, str(xml_dir), "--guarantees",
                             "--threads", str(WORKERS)])
    seconds = wait_running(conn, n, t0, proc)
    if proc.wait() != 0:
        raise RuntimeError(f"the floor's loop exited with {proc.returncode}")
    return seconds


def nvirtd(config: Path, state: Path, *, log_level: str = "info") -> tuple[subprocess.Popen, socket.socket]:
    """nvirtd as its service runs it (the default log level, info), its log lines in a file."""
    sock_path = state.parent / f"notify-{time.monotonic_ns()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(300)
    argv = [sys.executable, "-m", "daemon", "run", "--connect", URI, "--config-dir", str(config),
            "--state-dir", str(state), "--images-dir", str(state / "images"), "--log-level", log_level,
            "--no-trust-checks"]
    log = open(state.parent / f"log-{time.monotonic_ns()}.jsonl", "w+")
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "NOTIFY_SOCKET": str(sock_path)}, stderr=log)
    proc.log = log  # type: ignore[attr-defined]
    return proc, sock


def wait_ready(sock: socket.socket, t0: float) -> float:
    while not sock.recv(4096).startswith(b"READY=1"):
        pass
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process: steadier than its wall time on a shared machine."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_mib(pid: int) -> float:
    kib = int(next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS")))
    return kib / 1024


def stop(proc: subprocess.Popen, sock: socket.socket) -> dict:
    proc.terminate()
    proc.wait(timeout=60)
    sock.close()
    proc.log.seek(0)  # type: ignore[attr-defined]
    err = proc.log.read()  # type: ignore[attr-defined]
    proc.log.close()  # type: ignore[attr-defined]
    for line in reversed(err.splitlines()):
        if '"daemon_stopped"' in line:
            return json.loads(line).get("mutations", {})
    return {}


def one_size(conn, n: int, repeat: int, work: Path) -> dict:
    xmls = rendered_xmls(n)
    xml_dir, config = work / f"xml{n}", work / f"config{n}"
    xml_dir.mkdir()
    config.mkdir(mode=0o755)
    for i, (name, xml) in enumerate(xmls):
        (xml_dir / f"{name}.xml").write_text(xml)
        (config / f"{name}.json").write_text(json.dumps(spec(i)))
    runs: dict[str, list[float]] = {"loop": [], "fresh": [], "floor": [], "nvirtd": [], "ready": [], "rss": [],
                                    "fresh_cpu": [], "floor_cpu": [], "nvirtd_cpu": []}
    for r in range(repeat):  # interleaved, so that a noisy minute hurts all four alike
        wipe(conn)
        runs["loop"].append(raw_in_process(conn, xmls))
        wipe(conn)
        before = children_cpu()
        runs["fresh"].append(raw_fresh(xml_dir))
        runs["fresh_cpu"].append(children_cpu() - before)
        assert running(conn) == n
        wipe(conn)
        before = children_cpu()
        runs["floor"].append(floor_fresh(conn, n, xml_dir))
        runs["floor_cpu"].append(children_cpu() - before)
        assert running(conn) == n
        wipe(conn)
        state = work / f"state{n}-{r}"
        state.mkdir()
        t0 = time.perf_counter()
        proc, sock = nvirtd(config, state)
        runs["nvirtd"].append(wait_running(conn, n, t0, proc))
        runs["nvirtd_cpu"].append(cpu_seconds(proc.pid))
        wait_ready(sock, t0)
        time.sleep(0.5)
        runs["rss"].append(rss_mib(proc.pid))
        stop(proc, sock)
        t0 = time.perf_counter()  # restart on the running domains: nothing to do
        proc, sock = nvirtd(config, state)
        runs["ready"].append(wait_ready(sock, t0))
        mutations = stop(proc, sock)
        assert not mutations, f"a restart with an unchanged config changed something: {mutations}"
    wipe(conn)
    # the ratio of each round, then their median: this machine's speed drifts between rounds
    ratios = [a / b for a, b in zip(runs["nvirtd"], runs["fresh"])]
    floor_ratios = [a / b for a, b in zip(runs["nvirtd"], runs["floor"])]
    return {k: statistics.median(v) for k, v in runs.items()} | {
        "all": runs, "ratio": statistics.median(ratios), "ratios": ratios,
        "floor_ratio": statistics.median(floor_ratios), "floor_ratios": floor_ratios}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="100,1000,5000")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    compile_bytecode()
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(URI)  # keeps the test driver's state alive for the whole run
    rows = []
    with tempfile.TemporaryDirectory(prefix="nvirtd-cold-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        for n in (int(s) for s in args.sizes.split(",")):
            m = one_size(conn, n, args.repeat, work)
            rows.append((n, m))
            fmt = lambda key: ", ".join(f"{x:.2f}" for x in m["all"][key])  # noqa: E731
            ratios = lambda key: ", ".join(f"{r:.2f}x" for r in m[key])  # noqa: E731
            print(f"{n} domains: loop {m['loop']:.2f} s ({fmt('loop')}), fresh loop {m['fresh']:.2f} s "
                  f"({fmt('fresh')}), guarantees floor {m['floor']:.2f} s ({fmt('floor')}), nvirtd "
                  f"{m['nvirtd']:.2f} s ({fmt('nvirtd')}), vs fresh loop by round {ratios('ratios')}, vs floor "
                  f"{ratios('floor_ratios')}, CPU to all running: fresh loop {m['fresh_cpu']:.2f} s, floor (to its "
                  f"exit) {m['floor_cpu']:.2f} s, nvirtd {m['nvirtd_cpu']:.2f} s ({fmt('nvirtd_cpu')}), restart->READY "
                  f"{m['ready']:.2f} s ({fmt('ready')}), RSS {m['rss']:.0f} MiB", flush=True)
    conn.close()
    print(f"\nmedians of {args.repeat}, interleaved; process start -> all running; 'vs fresh loop' is the "
          "median of each round's ratio\n")
    print("| domains | loop in-process | fresh-process loop | guarantees floor | nvirtd cold | vs fresh loop | "
          "vs floor | per domain | restart -> READY (0 mutating calls) | RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, m in rows:
        print(f"| {n} | {m['loop']:.2f} s | {m['fresh']:.2f} s | {m['floor']:.2f} s | {m['nvirtd']:.2f} s | "
              f"{m['ratio']:.2f}x | {m['floor_ratio']:.2f}x | {m['nvirtd'] / n * 1000:.2f} ms | {m['ready']:.2f} s | "
              f"{m['rss']:.0f} MiB |")


if __name__ == "__main__":
    main()
