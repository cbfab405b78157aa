"""`nvirtd purge NAME`: the only way an overlay (a VM's data) is ever deleted.

It refuses while anything may still declare NAME: a file that declares it now, a
file that is broken right now and may (its text names it, or the running daemon's
last good content of it did), a name held in a conflict or still building. It also
refuses while libvirt has a domain of that name. It lists what it will delete,
and deletes only with --yes (or a "y" typed at a terminal).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .adapters.seed_iso import domain_seeds
from .cliargs import EXIT_ERROR, EXIT_OK, settings_from
from .configfiles import ConfigReader, may_declare
from .declared import read_declared


def declared_because(name: str, config_dir: str, state_dir: str) -> list[str]:
    """Why `name` counts as declared (empty: it does not)."""
    reasons: list[str] = []
    reader = ConfigReader(config_dir, trust_checks=True)
    files, problem = reader.read()
    if problem is not None:
        return [f"the config directory cannot be read ({problem.message}), so it may declare {name}"]
    for file, parsed in sorted(files.items()):
        if parsed.ok:
            if name in parsed.config.domains:  # type: ignore[union-attr]
                reasons.append(f"declared in {file}")
        elif file not in reader.broken_texts or may_declare({file: reader.broken_texts[file]}, name):
            # unreadable (refused, not UTF-8, too large) counts as "may declare" too
            reasons.append(f"{file} is broken and may declare it (fix that file first)")
    declared = read_declared(state_dir)
    if declared is not None and name in declared.get("domains", []):
        reasons.append("declared in the running daemon's last good config (a file held, in conflict, or building)")
    return reasons


def cmd_purge(args: argparse.Namespace) -> int:
    from .adapters.hypervisor import Hypervisor
    from .adapters.images import Images

    settings = settings_from(args)
    reasons = declared_because(args.name, settings.config_dir, settings.state_dir)
    if reasons:
        print(f"nvirtd: refusing to purge {args.name}: " + "; ".join(reasons), file=sys.stderr)
        return EXIT_ERROR

    async def defined() -> bool:
        hv = Hypervisor(settings.uri)
        await hv.connect()
        try:
            return await hv.observe_domain(args.name) is not None
        finally:
            await hv.close()
            hv.shutdown_pool()

    if asyncio.run(defined()):
        print(f"nvirtd: refusing to purge {args.name}: a domain of that name is still defined in libvirt "
              "(wait until nvirtd has removed it)", file=sys.stderr)
        return EXIT_ERROR
    images = Images(state_dir=settings.state_dir)
    overlays = [o for o, e in images.registry().items() if e.get("domain") == args.name]
    seeds = domain_seeds(settings.images_dir, args.name)  # its cloud-init seeds (they may hold secrets)
    if not overlays and not seeds:
        print(f"nothing recorded for {args.name} in {settings.state_dir}")
        return EXIT_OK
    print(f"purge {args.name} deletes these files for good:")
    for path in seeds:
        print(f"  {path}  (cloud-init seed)")
    for path in overlays:
        size = os.path.getsize(path) if os.path.exists(path) else None
        inside = asyncio.run(images.snapshots_in(path)) if size is not None else []
        print(f"  {path}" + (f"  ({size / 2**20:.1f} MiB)" if size is not None else "  (already gone)")
              + (f", with {len(inside)} snapshot{'s' if len(inside) > 1 else ''} inside: {', '.join(inside)}"
                 if inside else ""))
    if not args.yes:
        if not sys.stdin.isatty():
            print("run again with --yes to delete them")
            return EXIT_OK
        if input("delete them? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK

    async def delete() -> None:
        bases = images.bases_of(args.name)
        for path in await images.purge(args.name):
            print(f"deleted {path}")
        for path in seeds:
            os.unlink(path)
            print(f"deleted {path}")
        for root in await images.prune_roots(settings.images_dir, bases):  # only those no other overlay uses
            print(f"dropped GC root {root}")

    asyncio.run(delete())
    return EXIT_OK
