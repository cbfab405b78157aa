"""Deterministic simulation of the real daemon under seeded fault schedules.

    .venv/bin/python -m tests.simulation --schedules 10000 [--seed S] [--jobs N]

Schedule i runs with seed S+i (default S=0), spread over N processes (default: one
per CPU; started fresh, not forked: a process with threads, as a test session has,
does not fork safely); each schedule runs on its own, so the split changes no result. A violation prints its seed, the
schedule shrunk to a minimal one that still fails, and the trace of that run; the
same seed (`--seed N --schedules 1`) reproduces it exactly. The last line reads
`N schedules, K violations`; the exit code is 1 when K > 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .runner import failures, quiet
from .schedule import Step, generate
from .world import run_schedule


def shrink(steps: list[Step]) -> list[Step]:
    """Drop steps (halves first, then one by one) while the schedule still fails; the
    final quiet step always stays, it is where convergence is checked."""
    body, final = steps[:-1], steps[-1:]
    chunk = max(1, len(body) // 2)
    while chunk >= 1:
        i = 0
        while i < len(body):
            candidate = body[:i] + body[i + chunk:]
            if run_schedule(candidate + final) is not None:
                body = candidate
            else:
                i += chunk
        chunk //= 2
    return body + final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.simulation")
    p.add_argument("--schedules", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the first schedule")
    p.add_argument("--max-report", type=int, default=3, help="violations to shrink and print in full")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes to run schedules in")
    args = p.parse_args(argv)
    quiet()
    started = time.monotonic()
    found = failures(args.seed, args.schedules, args.jobs)
    violations = len(found)
    for n, (seed, failure) in enumerate(found, start=1):
        steps = generate(seed)
        print(f"seed {seed}: {failure.splitlines()[0]}", flush=True)
        if n <= args.max_report:
            small = shrink(steps)
            print(f"  shrunk from {len(steps)} to {len(small)} steps:")
            print("\n".join(f"    {s}" for s in small))
            print("  trace of the shrunk schedule:")
            print("\n".join(f"    {line}" for line in (run_schedule(small) or "").splitlines()[1:]), flush=True)
    elapsed = time.monotonic() - started
    print(f"({elapsed:.1f} s, {elapsed / max(args.schedules, 1) * 1000:.1f} ms a schedule)", file=sys.stderr)
    print(f"{args.schedules} schedules, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
