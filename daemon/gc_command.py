"""`nvirtd gc [--dry-run] [--older-than D]`: drop the GC roots of base images no overlay uses.

The same rule as the daemon's hourly pass (adapters/image_gc.py), run now: a root goes
once no overlay (also none moved aside) has its store path as backing file and it has
been unused for --older-than (default: the daemon's default retention, 7 days). It
prints every root with what keeps it, and what `nix-collect-garbage` can then free.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .cliargs import EXIT_ERROR, EXIT_OK, settings_from
from .core.spec_base import human_bytes
from .errors import NvirtdError


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def cmd_gc(args: argparse.Namespace) -> int:
    from .adapters import image_gc
    from .adapters.images import Images

    settings = settings_from(args)
    images = Images(state_dir=settings.state_dir)
    retention = args.older_than

    async def run() -> tuple[list[image_gc.RootUse], dict[str, tuple[int, bool]]]:
        found = await image_gc.collect(images, settings.images_dir, retention=retention, dry_run=args.dry_run)
        going = [r.store for r in found if r.removed]
        try:
            sizes = await image_gc.store_sizes(going, str(images.roots_dir))
        except (NvirtdError, OSError):
            sizes = {}  # nix-store is not there, or cannot tell: the roots are still right
        return found, sizes

    try:
        found, sizes = asyncio.run(run())
    except NvirtdError as exc:
        print(f"nvirtd: gc: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(image_gc.report_json(found))
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    if not found:
        print(f"no GC roots in {images.roots_dir}")
        return EXIT_OK
    for r in found:
        if r.users:
            shown = ", ".join(r.users[:3]) + (f" and {len(r.users) - 3} more" if len(r.users) > 3 else "")
            print(f"  in use        {r.store}  (backs {shown})")
        elif r.removed:
            size, shared = sizes.get(r.store, (None, False))
            extra = "" if size is None else f", {human_bytes(size)}" + (" (another root keeps it)" if shared else "")
            print(f"  {verb:<13} {r.store}  unused for {_age(r.idle)}{extra}")
        else:
            why = "never removed (--older-than never)" if retention is None else \
                f"kept until unused for {_age(retention)}"
            print(f"  unused        {r.store}  unused for {_age(r.idle)}, {why}")
    going = [r for r in found if r.removed]
    freed = sum(size for store, (size, shared) in sizes.items() if not shared)
    tail = ""
    if going and sizes:
        tail = f"; nix-collect-garbage {'would then free' if args.dry_run else 'can now free'} {human_bytes(freed)}"
    elif going:
        tail = "; sizes unknown (nix-store did not answer)"
    print(f"{verb} {len(going)} of {len(found)} roots{tail}")
    return EXIT_OK
