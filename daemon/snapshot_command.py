"""`nvirtd snapshot NAME [--name S | --list | --revert S [--stop] | --delete S]`.

Internal snapshots inside the VM's qcow2 overlays (adapters/hypervisor_snapshots.py says why), of
domains this nvirtd instance owns only. Reverting a running VM is refused unless
--stop, which shuts it down gracefully first (its shutdownTimeout, then destroy); the
daemon starts it again afterwards if the config says running. A revert also brings
back the definition the snapshot recorded; the daemon sees that as drift and defines
the current config again (no restart: `restart-required` if it differs).
"""

from __future__ import annotations

import argparse
import sys
import time

from .cliargs import EXIT_ERROR, EXIT_OK, settings_from
from .core.spec_base import check_name
from .errors import NvirtdError


def _when(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def cmd_snapshot(args: argparse.Namespace) -> int:
    from .adapters import hypervisor_snapshots as snapshots

    settings = settings_from(args)
    for given in (args.name, args.revert, args.delete):
        if given is not None:
            try:
                check_name(given)
            except ValueError as exc:
                print(f"nvirtd: snapshot: {exc}", file=sys.stderr)
                return EXIT_ERROR
    try:
        conn, dom, owner = snapshots.open_owned(settings.uri, args.domain, settings.instance)
    except NvirtdError as exc:
        print(f"nvirtd: snapshot: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return _act(args, dom, owner.timeout)
    except NvirtdError as exc:
        print(f"nvirtd: snapshot: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        conn.close()


def _act(args: argparse.Namespace, dom, timeout: int) -> int:
    from .adapters import hypervisor_snapshots as snapshots

    name = args.domain
    if args.list:
        found = snapshots.list_all(dom)
        if not found:
            print(f"{name} has no snapshots")
        for s in found:
            mark = "*" if s.current else " "
            print(f"{mark} {s.name:<32} {_when(s.created)}  taken while {s.state}"
                  + (f"  {s.description}" if s.description else ""))
        return EXIT_OK
    if args.delete is not None:
        snapshots.delete(dom, args.delete)
        print(f"deleted snapshot {args.delete} of {name}")
        return EXIT_OK
    if args.revert is not None:
        if snapshots.is_running(dom):
            if not args.stop:
                print(f"nvirtd: snapshot: {name} is running; revert stops it: pass --stop (graceful shutdown, "
                      f"destroyed after {timeout} s), or stop it first", file=sys.stderr)
                return EXIT_ERROR
            print(f"stopping {name} (up to {timeout} s)...", flush=True)
            forced = snapshots.stop_gracefully(dom, timeout)
            print(f"{name} {'destroyed after the timeout' if forced else 'shut down'}")
        snapshots.revert(dom, args.revert)
        print(f"reverted {name} to {args.revert}; nvirtd redefines it from the config and starts it if declared running")
        return EXIT_OK
    snap_name = args.name or time.strftime("nvirtd-%Y%m%dT%H%M%SZ", time.gmtime())
    running = snapshots.is_running(dom)
    print(f"taking snapshot {snap_name} of {name} ({'disks and memory: the guest pauses meanwhile' if running else 'disks'})...",
          flush=True)
    info = snapshots.create(dom, snap_name, f"nvirtd snapshot of {name}")
    print(f"snapshot {info.name} of {name} taken at {_when(info.created)} (inside its qcow2 overlays)")
    return EXIT_OK
