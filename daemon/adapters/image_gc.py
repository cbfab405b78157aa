"""Garbage collection of base images: the GC roots no overlay needs any more.

A root is in use while an overlay has its store path as backing file: every overlay
recorded in overlays.json that exists (those moved aside too: they keep their base),
and any other image file in the images directory (read with qemu-img; one that cannot
be read stops the collection, since its base is not known). The images the daemon's
current builds produced count as in use too. A root no overlay uses is removed once it
has been unused for the retention. Its age is the root link's own mtime: each pass
touches the links in use, so the age is the time since it was last seen in use (or
built). Removing a root frees nothing by itself: `nix-collect-garbage` then deletes the
store path, unless another root keeps it.

The roots lock (<state>/gcroots.lock, flock) is held by a collection while it decides
and removes, and by the creation of an overlay from rooting its base until the overlay
is recorded: a root is never removed under an overlay being made on it, also when the
collection runs in another process (`nvirtd gc` beside the daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..errors import CommandError, PermanentError
from . import proc

if TYPE_CHECKING:
    from .images import Images

log = structlog.get_logger("nvirtd.images")
@contextlib.asynccontextmanager
async def roots_lock(state_dir: str | Path) -> AsyncIterator[None]:
    """An exclusive flock, waited for without blocking the event loop."""
    path = Path(state_dir) / "gcroots.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass(frozen=True, slots=True)
class RootUse:
    link: str
    store: str
    users: tuple[str, ...]  # the overlays (or builds) that keep it
    idle: float  # seconds since it was last in use
    removed: bool = False

    @property
    def collectable(self) -> bool:
        return not self.users


async def collect(images: Images, images_dir: str, *, retention: float | None,
                  keep_images: Callable[[], Collection[str]] = lambda: (), dry_run: bool = False,
                  only: Collection[str] | None = None) -> list[RootUse]:
    """Look at every root (or those of the store paths in `only`) and remove those unused
    for at least `retention` seconds (None: never). Returns what it found, in link order.
    `keep_images` is asked under the lock (a build records its image under it too)."""
    found: list[RootUse] = []
    async with roots_lock(images.roots_dir.parent):
        users = await _users(images, images_dir, keep_images())
        now = time.time()
        links = sorted(images.roots_dir.iterdir()) if images.roots_dir.is_dir() else []
        for link in links:
            if not link.is_symlink():
                continue
            store = os.readlink(link)
            if only is not None and store not in only:
                continue
            using = tuple(sorted(users.get(store, ())))
            if using:
                if not dry_run:
                    os.utime(link, follow_symlinks=False)  # in use now: its age starts again
                found.append(RootUse(str(link), store, using, 0.0))
                continue
            idle = max(0.0, now - link.lstat().st_mtime)
            remove = retention is not None and idle >= retention
            if remove and not dry_run:
                link.unlink()
                log.info("gc_root_removed", root=str(link), store_path=store, unused_for=round(idle))
            found.append(RootUse(str(link), store, (), idle, removed=remove))
    return found


async def _users(images: Images, images_dir: str, keep_images: Collection[str]) -> dict[str, set[str]]:
    """store path -> what uses it."""
    users: dict[str, set[str]] = {}

    def use(backing: str | None, by: str) -> None:
        if backing and images.store.match(backing):
            users.setdefault(images.root_of(backing), set()).add(by)

    try:
        registry = images.registry()
    except ValueError as exc:
        raise PermanentError(f"{images.registry_path} cannot be read ({exc}); no root is removed") from None
    for overlay, entry in registry.items():
        if os.path.exists(overlay):
            use(entry.get("backing"), overlay)
    folder = Path(images_dir)
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        name = str(path)
        if name in registry or name.endswith(".creating") or not path.is_file():
            continue
        try:
            info = await images.inspect(name)
        except CommandError as exc:
            raise PermanentError(f"{name} cannot be read, so its base is not known; no root is removed "
                                 f"({exc.output_tail.strip()[-200:]})") from None
        use(info.backing if info else None, name)
    for image in keep_images:
        use(image, "a current build")
    return users


async def store_sizes(stores: Collection[str], own_roots: str, env: dict[str, str] | None = None
                      ) -> dict[str, tuple[int, bool]]:
    """store path -> (its bytes, whether a root that is not nvirtd's keeps it too)."""
    sizes = {}
    for store in stores:
        size = int((await proc.run(["nix-store", "--query", "--size", store], env=env)).stdout.strip() or 0)
        roots = (await proc.run(["nix-store", "--query", "--roots", store], env=env)).stdout.splitlines()
        others = [r for r in roots if r.strip() and not r.split(" -> ")[0].startswith(own_roots.rstrip("/") + "/")]
        sizes[store] = (size, bool(others))
    return sizes


def report_json(found: list[RootUse]) -> str:
    return json.dumps([{"root": r.link, "store_path": r.store, "used_by": list(r.users),
                        "unused_seconds": round(r.idle), "removed": r.removed} for r in found], indent=2)
