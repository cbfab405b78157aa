"""`nvirtd status --hosts h1,h2=URI,...`: one table for a fleet, read from each host's libvirt.

Where each VM of this instance runs (or is defined), where the config places it, and
what does not fit: a VM on the wrong host (its host changed: it is to be moved), one on
two hosts (never started twice by nvirtd, but a hand could), one on none. Each host is
read over a read-only libvirt connection (adapters/hypervisor_fleet.py): a host given by
name alone is `qemu+ssh://NAME/system`. A host that does not answer is named, and what
it may hold is said to be unknown; the others are still shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from .adapters import hypervisor_fleet
from .cliargs import EXIT_ERROR, EXIT_OK, default_instance
from .configfiles import ConfigReader
from .core import placement
from .core.config import merge


def parse_hosts(text: str) -> list[tuple[str, str]]:
    hosts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, uri = item.partition("=")
        hosts.append((name, uri if sep else f"qemu+ssh://{name}/system"))
    return hosts


async def read_hosts(hosts: list[tuple[str, str]], instance: str) -> dict[str, Any]:
    async def one(uri: str) -> Any:
        try:
            return await hypervisor_fleet.held(uri, instance)
        except hypervisor_fleet.PeerUnreachable as exc:
            return exc
    found = await asyncio.gather(*(one(uri) for _, uri in hosts))
    return {name: result for (name, _), result in zip(hosts, found)}


def rows(declared: dict[str, Any], seen: dict[str, Any]) -> list[dict[str, Any]]:
    fleet = placement.is_fleet(declared)
    reachable = {h: held for h, held in seen.items() if not isinstance(held, Exception)}
    names = sorted(set(declared) | {n for held in reachable.values() for n in held})
    out = []
    for name in names:
        d = declared.get(name)
        placed = (d.spec.host or "") if d is not None and fleet else None
        held_by = {h: held[name] for h, held in reachable.items() if name in held}
        runs = [h for h, x in held_by.items() if x.running]
        arriving = {h: x.arrival for h, x in held_by.items() if not x.running and x.arrival}
        defined = [h for h, x in held_by.items() if not x.running and not x.arrival]
        out.append({"name": name, "placed_on": placed, "runs_on": runs, "defined_on": defined,
                    "arriving_on": sorted(arriving),
                    "note": _note(d is not None, fleet, placed, runs, defined, arriving,
                                  next((x.leaving_for for x in held_by.values() if x.running and x.leaving_for), None),
                                  all_answered=len(reachable) == len(seen))})
    return out


def _note(declared: bool, fleet: bool, placed: str | None, runs: list[str], defined: list[str],
          arriving: dict[str, str], leaving_for: str | None, *, all_answered: bool = True) -> str:
    if not declared:
        return "not in the config: its host removes it"
    if fleet and not placed:
        return "placed on no host: give it `host`"
    if len(runs) > 1:
        return f"RUNS ON {len(runs)} HOSTS: {', '.join(runs)}"
    target = leaving_for if leaving_for and leaving_for not in runs else placed
    if target and runs and target not in runs:
        why = f"{runs[0]} is drained" if target == leaving_for else f"placed on {placed}"
        if arriving.get(target) == "ready":
            return f"{why}: {target} is ready, {runs[0]} migrates it live"
        if target in arriving:
            return f"{why}: moving to {target}, which prepares its disks"
        return f"runs on {runs[0]}, {why}: to be moved live ({target} prepares it first)"
    if placed and defined and placed not in defined and not runs:
        return (f"stopped on {', '.join(defined)}, placed on {placed}: to be moved (started paused there, its "
                "guest never runs, and migrated)")
    if not runs and not defined:
        return "on no host (yet)" if all_answered else "on no host that answered"
    return ""


def render(table: list[dict[str, Any]], seen: dict[str, Any]) -> str:
    lines = [f"{'NAME':<24} {'PLACED ON':<14} {'RUNS ON':<20} {'DEFINED ON':<20} NOTE"]
    for r in table:
        placed = "-" if r["placed_on"] is None else (r["placed_on"] or "(none)")
        defined = r["defined_on"] + [f"{h} (arrival)" for h in r.get("arriving_on", [])]
        lines.append(f"{r['name']:<24} {placed:<14} {','.join(r['runs_on']) or '-':<20} "
                     f"{','.join(defined) or '-':<20} {r['note']}".rstrip())
    for host, held in seen.items():
        if isinstance(held, Exception):
            lines.append(f"\nhost {host} did not answer ({held}): what it holds is unknown")
    return "\n".join(lines)


def cmd_fleet_status(args: argparse.Namespace) -> int:
    hosts = parse_hosts(args.hosts)
    if not hosts:
        print("nvirtd: --hosts names no host", flush=True)
        return EXIT_ERROR
    reader = ConfigReader(args.config_dir, trust_checks=not args.no_trust_checks)
    files, problem = reader.read()
    if problem is not None:
        print(f"nvirtd: {problem.message}")
        return EXIT_ERROR
    declared = merge(files, {}).domains  # name -> Declared (its file and spec)
    seen = asyncio.run(read_hosts(hosts, args.instance or default_instance(args.config_dir)))
    table = rows(declared, seen)
    if getattr(args, "json", False):
        print(json.dumps({"hosts": {h: (str(v) if isinstance(v, Exception) else "ok") for h, v in seen.items()},
                          "domains": table}, indent=2))
    else:
        print(render(table, seen))
    return EXIT_OK if not any(isinstance(v, Exception) for v in seen.values()) else EXIT_ERROR
