"""Nix-built base images, their GC roots, and the qcow2 overlays VMs run on.

The only module that runs nix and qemu-img (through adapters/proc.py).

Data safety rules kept here:
- an overlay is created once and never deleted, recreated, shrunk or rebased by this
  module (`grow_overlay` only ever enlarges it in place), except `move_aside` (rename to a dated name, kept) and `purge`, which
  only the explicit `nvirtd purge` command calls;
- every base image an overlay uses has a GC root under <state>/gcroots before the
  overlay is created, and keeps it while any overlay nvirtd recorded uses it;
- builds run in the background, at most `jobs` at once, one build per configuration
  path however many domains ask for it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..runtime import clock
from ..core import backoff
from ..core.backoff import Backoff
from ..core.build_progress import BuildProgress
from ..core.identity import gc_root_name
from ..core.observed import BuildPhase, BuildState
from ..core.spec_base import human_bytes
from ..errors import CommandError, PermanentError
from ..runtime.atomicfile import atomic_write
from . import image_gc, proc
from .image_builders import Builders

log = structlog.get_logger("nvirtd.images")
NIX_STORE = "/nix/store"


@functools.lru_cache(maxsize=4)
def store_pattern(store_dir: str = NIX_STORE) -> re.Pattern[str]:
    """A path in the nix store (nix's NIX_STORE_DIR; the simulation keeps one in a temp dir)."""
    return re.compile(rf"^({re.escape(store_dir)}/[0-9a-z]{{32}}-[^/\s]+)(/\S*)?$")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int
    backing: str | None
    backing_format: str | None


async def image_info(path: str) -> ImageInfo:
    # -U: read even while QEMU holds the write lock of a running guest's overlay
    result = await proc.run(["qemu-img", "info", "-U", "--output=json", path])
    data = json.loads(result.stdout)
    return ImageInfo(
        path=path, format=data.get("format", ""), virtual_size=int(data.get("virtual-size", 0)),
        actual_size=int(data.get("actual-size", 0)),
        backing=data.get("full-backing-filename") or data.get("backing-filename"),
        backing_format=data.get("backing-filename-format"),
    )


def store_root(image: str, store_dir: str = NIX_STORE) -> str:
    """/nix/store/HASH-name/nixos.qcow2 -> /nix/store/HASH-name."""
    match = store_pattern(store_dir).match(image)
    if not match:
        raise ValueError(f"{image} is not in the nix store")
    return match.group(1)


def parse_build_output(stdout: str, store_dir: str = NIX_STORE) -> str:
    """The store path the builder printed last (its result), not a guess; or, from `nix build
    --json`, its first output."""
    text = stdout.strip()
    if text.startswith("["):
        try:
            outputs = json.loads(text)[0]["outputs"]
            out = outputs.get("out") or next(iter(outputs.values()))
        except (ValueError, LookupError, TypeError, AttributeError, StopIteration):
            out = ""
        if isinstance(out, str) and store_pattern(store_dir).match(out):
            return out
    for line in reversed(text.splitlines()):
        line = line.strip()
        if store_pattern(store_dir).match(line):
            return line
    raise PermanentError(f"the build printed no /nix/store path; its output ended with: {stdout.strip()[-300:]!r}")


def find_image(result: str) -> str:
    """A result that is a directory holds exactly one qcow2 image."""
    if not os.path.isdir(result):
        return result
    found = sorted(str(p) for p in Path(result).rglob("*.qcow2"))
    if len(found) != 1:
        raise PermanentError(f"expected one .qcow2 image in {result}, found {len(found)}")
    return found[0]


class Images:
    def __init__(self, *, state_dir: str, build_command: tuple[str, ...] | None = None, jobs: int = 2,
                 on_built: Callable[[str], None] = lambda path: None, retry_delay: float | None = None,
                 build_env: dict[str, str] | None = None, store_dir: str | None = None,
                 build_timeout: float | None = None, on_progress: Callable[[], None] = lambda: None,
                 on_finished: Callable[[bool, float], None] = lambda ok, seconds: None) -> None:
        self.roots_dir = Path(state_dir) / "gcroots"
        self.registry_path = Path(state_dir) / "overlays.json"
        self.builders = Builders(build_command, build_env)  # --build-command, or the host's own builder
        self.on_built = on_built
        self.on_progress = on_progress  # a running build wrote a line (see progress())
        self.on_finished = on_finished  # a build ended: built or not, after how long (metrics)
        self.retry_delay = retry_delay  # the first retry's wait (core/backoff.py's build row if None)
        self.build_env = build_env
        self.build_timeout = build_timeout  # a build that never ends is a failure, retried with backoff
        self.store_dir = store_dir or os.environ.get("NIX_STORE_DIR") or NIX_STORE
        self.store = store_pattern(self.store_dir)
        self._jobs = asyncio.Semaphore(jobs)
        self._builds: dict[str, BuildState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, int] = {}
        self._progress: dict[str, BuildProgress] = {}
        self._stale: set[str] = set()  # invalidated while building: built again once this build ends

    # ---- builds ---------------------------------------------------------------------
    def build_state(self, path: str) -> BuildState:
        return self._builds.get(path, BuildState())

    def request_build(self, path: str, *, flake: bool = False) -> None:
        """Start a background build of `path` (a configuration file, or with `flake` a flake
        installable) unless one runs; returns at once."""
        if path in self._tasks:
            return
        self._builds[path] = BuildState(BuildPhase.building)
        self._tasks[path] = asyncio.create_task(self._build(path, flake), name=f"build {path}")

    def invalidate(self, paths: set[str] | None = None) -> None:
        """Forget finished builds so the next reconcile re-evaluates them (reload); a failed one
        is tried again at once, its backoff started afresh (a reload is the user's "try now").
        A build still running is not started twice: it is evaluated again once it ends."""
        for path in list(self._builds):
            if paths is None or path in paths:
                if path in self._tasks:
                    self._stale.add(path)
                    continue
                del self._builds[path]
                self._failures.pop(path, None)

    def progress(self) -> dict[str, dict[str, object]]:
        """Each running build's progress (core/build_progress.py; `nvirtd status` shows it)."""
        return {path: p.as_json() for path, p in sorted(self._progress.items())}

    def current_images(self) -> set[str]:
        """The images the builds of this process produced last (kept rooted while declared)."""
        return {b.image for b in self._builds.values() if b.image}

    @property
    def building(self) -> int:
        return len(self._tasks)

    async def cancel_builds(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _build(self, path: str, flake: bool) -> None:
        started = clock.monotonic()
        try:
            async with self._jobs:
                argv = await self.builders.argv(path, flake=flake)
                log.info("image_build_started", config=path, argv=argv)
                progress = self._progress[path] = BuildProgress(clock.wall())
                self.on_progress()
                try:
                    result = await proc.run(argv, env=self.build_env, config=path, timeout=self.build_timeout,
                                            on_line=lambda line: self._line(progress, line))
                except TimeoutError:
                    raise PermanentError(f"the build did not finish within {self.build_timeout:g}s") from None
                image = find_image(parse_build_output(result.stdout, self.store_dir))
                async with image_gc.roots_lock(self.roots_dir.parent):  # rooted and known as built at once
                    await self.ensure_root(image)
                    self._builds[path] = BuildState(BuildPhase.built, image=image)
            self._failures.pop(path, None)
            log.info("image_built", config=path, image=image, seconds=round(clock.monotonic() - started, 2))
            self.on_finished(True, clock.monotonic() - started)
        except (CommandError, PermanentError, OSError) as exc:
            count = self._failures.get(path, 0) + 1
            self._failures[path] = count
            delay = backoff.delay(Backoff.build, count, first=self.retry_delay)
            tail = exc.output_tail if isinstance(exc, CommandError) else str(exc)
            self._builds[path] = BuildState(BuildPhase.failed, error=_tail_lines(tail),
                                            retry_at=clock.monotonic() + delay)
            log.error("image_build_failed", config=path, retry_in=delay, log_tail=_tail_lines(tail))
            self.on_finished(False, clock.monotonic() - started)
        finally:
            self._tasks.pop(path, None)
            self._progress.pop(path, None)
            self.on_progress()
        if path in self._stale:  # a reload asked for it again while it ran: evaluate it once more
            self._stale.discard(path)
            self._builds.pop(path, None)
            self._failures.pop(path, None)
        self.on_built(path)

    def _line(self, progress: BuildProgress, line: str) -> None:
        progress.feed(line)
        self.on_progress()

    # ---- GC roots -------------------------------------------------------------------
    def root_of(self, image: str) -> str:
        return store_root(image, self.store_dir)

    def is_rooted(self, image: str) -> bool:
        """Whether the store path holding `image` has nvirtd's GC root (no I/O beyond a stat)."""
        if not self.store.match(image):
            return True  # not a store path: nothing would collect it
        store = store_root(image, self.store_dir)
        link = self.roots_dir / gc_root_name(store)
        return link.is_symlink() and os.readlink(link) == store and os.path.exists(store)

    async def ensure_root(self, image: str) -> Path:
        """An indirect GC root for the store path holding `image` (idempotent)."""
        store = store_root(image, self.store_dir)
        link = self.roots_dir / gc_root_name(store)
        if self.is_rooted(image):
            return link
        self.roots_dir.mkdir(parents=True, exist_ok=True)
        await proc.run(["nix-store", "--realise", store, "--add-root", str(link), "--indirect"], env=self.build_env)
        log.info("gc_root_added", root=str(link), store_path=store)
        return link

    async def prune_roots(self, images_dir: str, stores: Collection[str]) -> list[str]:
        """Drop the roots of these store paths if no overlay uses them now (see image_gc.py)."""
        found = await image_gc.collect(self, images_dir, retention=0.0, only=set(stores))
        return [r.link for r in found if r.removed]

    # ---- overlays -------------------------------------------------------------------
    def registry(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.registry_path.read_text())
        except FileNotFoundError:
            return {}

    def _record(self, overlay: str, **entry: str) -> None:
        data = self.registry()
        data[overlay] = {"overlay": overlay, **entry}
        atomic_write(self.registry_path, json.dumps(data, indent=2, sort_keys=True))

    @staticmethod
    async def snapshots_in(path: str) -> list[str]:
        """The names of the internal snapshots inside a qcow2 image (`nvirtd snapshot` makes them)."""
        out = (await proc.run(["qemu-img", "info", "-U", "--output=json", path])).stdout
        return [s.get("name", "") for s in json.loads(out).get("snapshots", [])]

    async def inspect(self, overlay: str) -> ImageInfo | None:
        if not os.path.exists(overlay):
            return None
        return await image_info(overlay)

    async def create_overlay(self, overlay: str, image: str, *, size: int | None, domain: str, disk: str,
                             root: bool = True) -> ImageInfo:
        """A new qcow2 overlay on `image` (a nix store image, GC-rooted first; or, root=False,
        an image disk's base outside the store)."""
        if os.path.exists(overlay):
            raise PermanentError(f"{overlay} already exists; nvirtd never overwrites an overlay")
        base = await image_info(image)
        if size is not None and size < base.virtual_size:
            raise PermanentError(
                f"{'nix' if root else 'image'}.size of disk {disk} is {human_bytes(size)}, smaller than the image's "
                f"virtual size {human_bytes(base.virtual_size)}; give at least that much (or omit size to use the "
                "image's)")
        async with image_gc.roots_lock(self.roots_dir.parent):  # no collection between rooting and recording
            return await self._create_rooted(overlay, image, base, size=size, domain=domain, disk=disk, root=root)

    async def _create_rooted(self, overlay: str, image: str, base: ImageInfo, *, size: int | None, domain: str,
                             disk: str, root: bool) -> ImageInfo:
        if os.path.exists(overlay):  # a restore, under the same lock, put one there meanwhile
            raise PermanentError(f"{overlay} already exists; nvirtd never overwrites an overlay")
        if root:
            await self.ensure_root(image)
        Path(overlay).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{overlay}.creating"
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", base.format, "-b", image, tmp]
        if size is not None:
            argv.append(str(size))
        if os.path.exists(tmp):
            os.unlink(tmp)  # a leftover of a crash during create: never held data
        await proc.run(argv, domain=domain)
        info = await image_info(tmp)
        if info.backing != image or info.backing_format != base.format:
            os.unlink(tmp)
            raise PermanentError(f"qemu-img created {overlay} backed by {info.backing}, expected {image}")
        self._record(overlay, backing=image, domain=domain, disk=disk)
        try:
            os.link(tmp, overlay)  # never onto a name that was taken meanwhile (rename would replace it)
        finally:
            os.unlink(tmp)
        log.info("overlay_created", domain=domain, disk=disk, overlay=overlay, backing=image)
        return info

    async def grow_overlay(self, overlay: str, size: int, *, domain: str, disk: str) -> ImageInfo:
        """Grow the overlay in place to `size` bytes, while no guest has it open (QEMU's write
        lock makes qemu-img fail otherwise). The same file, its data untouched; never smaller
        (checked here, and qemu-img itself refuses a shrink without --shrink)."""
        info = await image_info(overlay)
        if size < info.virtual_size:
            raise PermanentError(f"refusing to shrink {overlay} from {human_bytes(info.virtual_size)} to "
                                 f"{human_bytes(size)}")
        if size == info.virtual_size:
            return info
        await proc.run(["qemu-img", "resize", "-q", "-f", "qcow2", overlay, str(size)], domain=domain)
        log.info("overlay_grown", domain=domain, disk=disk, overlay=overlay, old_size=info.virtual_size,
                 new_size=size)
        return await image_info(overlay)

    def move_aside(self, overlay: str, *, domain: str, disk: str, reason: str = "replaced") -> str:
        """Rename an overlay to a dated name; it is kept (with its base rooted) until purged.
        Never onto an existing name: two recreates within one second keep both overlays."""
        kept = self._aside_name(overlay, reason)
        os.link(overlay, kept)  # fails rather than replaces, should the name be taken meanwhile
        entry = self.registry().get(overlay, {})
        self._record(kept, backing=entry.get("backing", ""), domain=domain, disk=disk)
        os.unlink(overlay)
        log.warning("overlay_moved_aside", domain=domain, disk=disk, overlay=overlay, kept_as=kept, reason=reason)
        return kept

    async def swap_in(self, overlay: str, new_file: str, *, backing: str | None, domain: str, disk: str,
                      reason: str = "restored") -> str | None:
        """Put `new_file` at the overlay's name; the old overlay, if any, is kept under a dated
        name (returned) with its base still rooted. The name never points at nothing."""
        async with image_gc.roots_lock(self.roots_dir.parent):
            kept = None
            old = self.registry().get(overlay, {})
            disk = old.get("disk", disk)  # the config's name of the disk, when nvirtd made it
            if os.path.exists(overlay):
                kept = self._aside_name(overlay, reason)
                # what backs it, from the file itself when nvirtd did not record it (GC reads this)
                was = old.get("backing") or (await image_info(overlay)).backing or ""
                os.link(overlay, kept)
                self._record(kept, backing=was, domain=domain, disk=disk)
            self._record(overlay, backing=backing or "", domain=domain, disk=disk)
            os.rename(new_file, overlay)
        log.warning("overlay_swapped", domain=domain, disk=disk, overlay=overlay, kept_as=kept, reason=reason)
        return kept

    def bases_of(self, domain: str) -> set[str]:
        """The store paths the overlays recorded for `domain` are backed by."""
        return {self.root_of(e["backing"]) for e in self.registry().values()
                if e.get("domain") == domain and e.get("backing") and self.store.match(e["backing"])}

    @staticmethod
    def _aside_name(overlay: str, reason: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock.wall()))
        kept = f"{overlay}.{reason}-{stamp}"
        n = 1
        while os.path.lexists(kept):
            n += 1
            kept = f"{overlay}.{reason}-{stamp}-{n}"
        return kept

    async def purge(self, domain: str) -> list[str]:
        """Delete every overlay recorded for `domain` (explicit `nvirtd purge` only)."""
        data = self.registry()
        removed = []
        for overlay, entry in list(data.items()):
            if entry.get("domain") == domain:
                if os.path.exists(overlay):
                    os.unlink(overlay)
                    removed.append(overlay)
                del data[overlay]
        atomic_write(self.registry_path, json.dumps(data, indent=2, sort_keys=True))
        for path in removed:
            log.warning("overlay_purged", domain=domain, overlay=path)
        return removed


def _tail_lines(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
