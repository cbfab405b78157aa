"""`nvirtd drain [HOST] [--undo]`: host maintenance in a fleet, like Incus' evacuate.

It marks the host drained (a file in the daemon's state directory, which survives a
restart of nvirtd and of the host), makes the daemon re-read its config, and waits while
the host's VMs leave: each to the first of its `hosts` that is a peer, by live migration,
or stopped where `evacuate: stop` says so (core/placement.drained). A VM with neither
stays, and is named. `--undo` ends the drain: the VMs come back the same way, the
stopped ones start. It runs on the host it drains: the daemon there does the work, the
other hosts see it through libvirt (core/fleet_moves.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from . import status as status_mod
from .cliargs import EXIT_ERROR, EXIT_OK, state_dir_of
from .commands import running_daemon
from .core import placement
from .configstore import DRAINED_FILE

POLL = 0.5


def cmd_drain(args: argparse.Namespace) -> int:
    state_dir = state_dir_of(args)
    running = running_daemon(state_dir)
    if running is None:
        return EXIT_ERROR
    data, pid = running
    here = data.get("daemon", {}).get("host") or "?"
    if args.host is not None and not placement.is_me(args.host, here):
        print(f"nvirtd: this is host {here!r}: run `nvirtd drain {args.host}` on {args.host} (each host's daemon "
              "moves its own VMs)", file=sys.stderr)
        return EXIT_ERROR
    marker = os.path.join(state_dir, DRAINED_FILE)
    if args.undo:
        if os.path.exists(marker):
            os.unlink(marker)
        print(f"host {here}: no longer drained; its VMs come back")
    else:
        with open(marker, "w") as out:
            out.write(f"drained at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        print(f"host {here}: drained; its VMs leave")
    os.kill(pid, signal.SIGHUP)
    if args.no_wait or args.undo:
        return EXIT_OK
    return _wait(state_dir, time.time(), args.timeout)


def _wait(state_dir: str, since: float, timeout: float) -> int:
    """Print each VM's progress until none is left running here but those that cannot leave."""
    deadline = time.monotonic() + timeout
    said: dict[str, str] = {}
    while True:
        time.sleep(POLL)
        try:
            data = status_mod.load(state_dir)
        except (OSError, ValueError):
            continue
        if (data.get("reload", {}).get("finished_at") or 0) < since:
            continue  # not read yet
        staying, leaving = [], []
        for entry in data.get("domains", []):
            line = _line(entry)
            if said.get(entry["name"]) != line:
                said[entry["name"]] = line
                print(line)
            conditions, phase = entry.get("conditions", []), entry.get("phase")
            if "moving" in conditions or phase == "stopping":
                leaving.append(entry["name"])
            elif phase == "running" and "elsewhere" not in conditions:  # no alternative: it stays
                staying.append(entry["name"])
        if not leaving:
            if staying:
                print(f"drained, but {len(staying)} VM(s) stay: {', '.join(sorted(staying))} (give them `hosts` "
                      "alternatives, or `evacuate: stop`)", file=sys.stderr)
                return EXIT_ERROR
            print("drained: no VM runs here")
            return EXIT_OK
        if time.monotonic() > deadline:
            print(f"nvirtd: {len(leaving)} VM(s) still leaving after {timeout:g} s: {', '.join(sorted(leaving))} "
                  "(the drain goes on; see nvirtd status)", file=sys.stderr)
            return EXIT_ERROR


def _line(entry: dict) -> str:
    detail = entry.get("error") or entry.get("message") or ""
    return f"  {entry['name']}: {entry.get('phase')}" + (f" ({detail})" if detail else "")
