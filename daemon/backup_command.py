"""`nvirtd backup NAME [--to DIR]` and `nvirtd restore NAME --from DIR [--stop]`.

A backup is a folder DIR/NAME/UTC-TIME/ with one flattened qcow2 per disk and a
manifest.json (what, when, how consistent, checksums); it is written as
UTC-TIME.partial and renamed when complete, so a failed backup never looks like a good
one. adapters/hypervisor_backups.py says how each part is done and why it is self-contained.
A restore goes onto a domain of this instance only, from a backup of that domain only;
the current overlays are kept aside (never deleted), and a running VM is refused
unless --stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable

from .cliargs import EXIT_ERROR, EXIT_OK, settings_from
from .core.spec_base import human_bytes
from .errors import NvirtdError, PermanentError

MANIFEST = "manifest.json"


def _fail(verb: str, message: str) -> int:
    print(f"nvirtd: {verb}: {message}", file=sys.stderr)
    return EXIT_ERROR


def _progress(name: str):
    shown = [-10]

    def show(done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 0
        if shown[0] != 100 and (pct >= shown[0] + 10 or pct == 100 or sys.stdout.isatty()):
            end = "\r" if sys.stdout.isatty() else "\n"
            print(f"backing up {name}: {pct}% ({human_bytes(done)} of {human_bytes(total)})", end=end, flush=True)
            shown[0] = pct
    return show


def take_backup(uri: str, name: str, instance: str, to: str,
                progress: Callable[[int, int], None] = lambda done, total: None) -> tuple[str, dict, float]:
    """One backup of `name` into TO/NAME/UTC-TIME: (its folder, the manifest, seconds).
    Blocking (libvirt and qemu-img): the daemon runs it in a thread."""
    from .adapters import hypervisor_backups as backups
    from .adapters.hypervisor_snapshots import open_owned

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = os.path.join(to, name)
    partial, final = os.path.join(folder, f"{stamp}.partial"), os.path.join(folder, stamp)
    conn, dom, owner = open_owned(uri, name, instance)
    try:
        disks, running, uuid = backups.look(dom)
        if not disks:
            raise PermanentError(f"{name} has no disk to back up")
        backups.check_writable(partial)
        started = time.monotonic()
        files = {d.target: os.path.join(partial, f"{d.target}.qcow2") for d in disks}
        if running:
            frozen: list[bool] = []
            backups.push_backup(dom, files, before_begin=lambda: frozen.append(backups.freeze(dom)),
                                after_begin=lambda: backups.thaw(dom) if frozen and frozen[0] else None,
                                progress=progress)
            consistency = "filesystems frozen by the guest agent" if frozen and frozen[0] else \
                "crash-consistent (no guest agent answered: as if the power had been cut)"
            method = "libvirt push backup of the running VM"
        else:
            for d in disks:
                asyncio.run(backups.copy_flat(d.path, d.format, files[d.target]))
            consistency, method = "clean (the VM was stopped)", "qemu-img convert of the stopped VM"
        manifest = {"format": 1, "domain": name, "uuid": uuid, "created": stamp,
                    "consistency": consistency, "method": method, "self_contained": True,
                    "spec_hash": owner.spec_hash, "config_file": owner.file,
                    "disks": {d.target: {"file": os.path.basename(files[d.target]), "source": d.path,
                                         "format": d.format, "bytes": os.path.getsize(files[d.target]),
                                         "sha256": backups.sha256_of(files[d.target])} for d in disks}}
        with open(os.path.join(partial, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
        os.rename(partial, final)
        return final, manifest, time.monotonic() - started
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # never half a backup that looks whole
        raise
    finally:
        conn.close()


def complete_backups(to: str, name: str) -> list[str]:
    """The whole backups of `name` (folders with a manifest, no .partial), oldest first."""
    folder = os.path.join(to, name)
    try:
        found = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [os.path.join(folder, f) for f in found
            if not f.endswith(".partial") and os.path.isfile(os.path.join(folder, f, MANIFEST))]


def prune_backups(to: str, name: str, keep: int) -> list[str]:
    """Delete the oldest whole backups beyond `keep`; the newest is never deleted."""
    whole = complete_backups(to, name)
    going = whole[:max(0, len(whole) - max(1, keep))]
    for path in going:
        shutil.rmtree(path)
    return going


def cmd_backup(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        final, manifest, seconds = take_backup(settings.uri, args.domain, settings.instance, args.to,
                                               _progress(args.domain))
    except (NvirtdError, OSError) as exc:
        return _fail("backup", f"{args.domain}: {exc}; nothing was kept of this backup")
    total = sum(d["bytes"] for d in manifest["disks"].values())
    count = len(manifest["disks"])
    print(f"backed up {args.domain} to {final} ({human_bytes(total)}, {count} disk{'s' if count > 1 else ''}, "
          f"{seconds:.1f} s): {manifest['consistency']}")
    return EXIT_OK


def _read_manifest(folder: str, name: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise PermanentError(f"{folder} is not a backup nvirtd can read ({path}: {exc})") from None
    if manifest.get("domain") != name:
        raise PermanentError(f"{folder} is a backup of {manifest.get('domain')!r}, not of {name!r}; nothing changed")
    return manifest


def cmd_restore(args: argparse.Namespace) -> int:
    from .adapters import hypervisor_backups as backups, hypervisor_snapshots as snapshots
    from .adapters.images import Images, image_info

    settings = settings_from(args)
    try:
        manifest = _read_manifest(args.source, args.domain)
        conn, dom, owner = snapshots.open_owned(settings.uri, args.domain, settings.instance)
    except NvirtdError as exc:
        return _fail("restore", str(exc))
    images = Images(state_dir=settings.state_dir)
    made: dict[str, tuple[str, str | None]] = {}
    try:
        current = {d.target: d for d in backups.look(dom)[0]}
        for target, disk in manifest["disks"].items():
            if target not in current:
                raise PermanentError(f"the backup has disk {target}, which {args.domain} no longer has")
            path = os.path.join(args.source, disk["file"])
            print(f"checking {path}...", flush=True)
            if backups.sha256_of(path) != disk["sha256"]:
                raise PermanentError(f"{path} does not match its checksum in the manifest; nothing changed")
        if snapshots.is_running(dom) and not args.stop:
            raise PermanentError(f"{args.domain} is running; pass --stop to shut it down first (its overlays "
                                 "are kept aside, not deleted)")
        for target, disk in manifest["disks"].items():  # slow part first, while the VM still runs
            dest = current[target]
            info = asyncio.run(image_info(dest.path)) if os.path.exists(dest.path) else None
            base = info.backing if info and info.backing and os.path.exists(info.backing) else None
            tmp = f"{dest.path}.restoring"
            if os.path.exists(tmp):
                os.unlink(tmp)  # a leftover of an interrupted restore: never held data
            asyncio.run(backups.restore_into(os.path.join(args.source, disk["file"]), tmp, fmt=dest.format,
                                             backing=base, backing_format=info.backing_format if info else None))
            made[target] = (tmp, base)
        if snapshots.is_running(dom):
            print(f"stopping {args.domain} (up to {owner.timeout} s)...", flush=True)
            snapshots.stop_gracefully(dom, owner.timeout)
        for target, (tmp, base) in made.items():
            kept = asyncio.run(images.swap_in(current[target].path, tmp, backing=base, domain=args.domain,
                                              disk=target))
            made[target] = ("", base)  # swapped in: no longer ours to clean up
            thin = f"on its base {base}" if base else "standalone (no base here)"
            print(f"restored {target} into {current[target].path}, {thin}" +
                  (f"; the previous overlay is kept as {kept}" if kept else ""))
        if snapshots.is_running(dom):  # started on the old files in the moment of the swap: again, on the new
            snapshots.stop_gracefully(dom, 0)
    except (NvirtdError, OSError) as exc:
        for tmp, _base in made.values():
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)  # a new file not swapped in: the overlays are as they were
        swapped = any(not tmp for tmp, _ in made.values())
        return _fail("restore", str(exc) if swapped else f"{exc}; the overlays are as they were")
    finally:
        conn.close()
    print(f"restored {args.domain} from {args.source} ({manifest['created']}, {manifest['consistency']}); "
          "nvirtd starts it if it is declared running")
    return EXIT_OK
