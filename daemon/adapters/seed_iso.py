"""The cloud-init seed on disk: a small ISO 9660 image (Joliet and Rock Ridge names, volume
label `cidata`), written with pycdlib, a maintained pure-Python ISO library (no hand-made
ISO bytes, no subprocess).

A seed is written once under a name that carries its content's digest
(core/cloud_seed.py): beside it first, then linked into place, so a guest never finds a
half-written seed. It may hold secrets (passwords, keys in user-data): mode 0600; libvirt
gives QEMU access when the guest starts, as for any disk.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import structlog

from ..core.cloud_seed import VOLUME_LABEL, Seed, is_seed_of

log = structlog.get_logger("nvirtd.seeds")
in_thread = asyncio.to_thread  # the simulation writes in its own (virtual-time) loop instead


async def write_seed(seed: Seed, *, domain: str) -> None:
    await in_thread(_write, seed)
    log.info("seed_written", domain=domain, seed=seed.path, files=[name for name, _ in seed.files])


def _write(seed: Seed) -> None:
    path = Path(seed.path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.writing")
    import pycdlib  # here: 1.5 MiB that a host without cloud-init guests never needs resident
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    for i, (name, text) in enumerate(seed.files):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/F{i}.;1", rr_name=name, joliet_path=f"/{name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            iso.write_fp(out)
            out.flush()
            os.fsync(out.fileno())
    finally:
        iso.close()
    try:
        os.link(tmp, path)  # never onto a name that was taken meanwhile
    except FileExistsError:
        pass  # the same content, written meanwhile
    finally:
        os.unlink(tmp)


def domain_seeds(images_dir: str, name: str) -> list[str]:
    """The seeds nvirtd wrote for domain `name` (of any content)."""
    try:
        entries = os.listdir(images_dir)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(images_dir, e) for e in entries if is_seed_of(e, name))


def remove_stale(images_dir: str, name: str, keep: str | None, *, domain: str) -> list[str]:
    removed = []
    for path in domain_seeds(images_dir, name):
        if path != keep:
            os.unlink(path)
            removed.append(path)
    if removed:
        log.info("seeds_removed", domain=domain, seeds=removed)
    return removed
