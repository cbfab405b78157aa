"""Watch /etc/nvirt.d with watchdog (inotify) and ask for a reload, debounced.

Only hands a signal to the loop: the watchdog thread calls
loop.call_soon_threadsafe(), the loop debounces a burst of events (an editor's
temp file + rename, `sed -i`, vim's backup dance) into one reload.

inotify does not follow a symlink to a directory, and /etc/nvirt.d often is one
(NixOS' environment.etc: /etc/nvirt.d -> /etc/static/nvirt.d, where /etc/static
points into the store; config management does the same). So the directory watched
is the resolved one, and the directory holding every symlink on the way is watched
too: when a link changes (a new NixOS generation), the path is resolved again and
the watches follow. The parent of the resolved directory is watched as well, so a
directory that is removed, replaced or created later is noticed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..configfiles import is_config_name

MAX_LINKS = 40  # like the kernel's limit on symlinks in one path


def symlinks_on_the_way(path: Path) -> list[Path]:
    """Every symlink met while resolving `path` component by component, in order."""
    links: list[Path] = []
    pending = list(path.absolute().parts[1:])
    current = Path("/")
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        if candidate.is_symlink() and len(links) < MAX_LINKS:
            links.append(candidate)
            try:
                target = Path(os.readlink(candidate))
            except OSError:
                return links
            if target.is_absolute():
                current = Path("/")
                pending = list(target.parts[1:]) + pending
            else:
                pending = list(target.parts) + pending
            continue
        current = candidate
    return links


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: "ConfigDirWatcher") -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", None):
            paths.append(os.fsdecode(event.dest_path))
        if any(self.watcher.relevant(p, event.event_type) for p in paths):
            self.watcher.loop.call_soon_threadsafe(self.watcher.poke)


class ConfigDirWatcher:
    def __init__(self, directory: str, on_change: Callable[[], None], *, debounce: float = 0.2,
                 also: Callable[[], set[Path]] = set) -> None:
        self.given = Path(directory).absolute()
        self.also = also  # other files of the directory the config reads (cloud-init files)
        self.directory = self.given.resolve()
        self.links: list[Path] = []
        self.on_change = on_change
        self.debounce = debounce
        self.loop = asyncio.get_running_loop()
        self._observer = Observer()
        self._handler = _Handler(self)
        self._watches: dict[str, object] = {}  # watched directory -> watchdog's handle
        self._watched_inode: int | None = None
        self._timer: asyncio.TimerHandle | None = None

    def relevant(self, path: str, event_type: str = "modified") -> bool:
        p = Path(path)
        if p in self.links:  # a symlink on the way changed: resolve again
            return True
        if p == self.directory:  # the directory itself came, went or was replaced
            return event_type in ("created", "deleted", "moved")
        return p.parent == self.directory and (is_config_name(p.name) or p in self.also()
                                               or self.given / p.name in self.also())

    def start(self) -> None:
        self._rewatch()
        self._observer.start()

    def _wanted(self) -> set[str]:
        dirs = {str(link.parent) for link in self.links}
        dirs.add(str(self.directory.parent))
        if self.directory.is_dir():
            dirs.add(str(self.directory))
        return {d for d in dirs if os.path.isdir(d)}

    def _rewatch(self) -> None:
        """Resolve the path again and watch what that needs, changing only what differs
        (dropping a watch even briefly could miss a save)."""
        self.links = symlinks_on_the_way(self.given)
        self.directory = self.given.resolve()
        try:
            inode = self.directory.stat().st_ino if self.directory.is_dir() else None
        except OSError:
            inode = None
        wanted = self._wanted()
        replaced = inode != self._watched_inode
        self._watched_inode = inode
        for path in list(self._watches):
            if path not in wanted or (replaced and path == str(self.directory)):
                self._unschedule(path)
        for path in sorted(wanted - set(self._watches)):
            try:
                self._watches[path] = self._observer.schedule(self._handler, path, recursive=False)
            except OSError:
                pass

    def _unschedule(self, path: str) -> None:
        handle = self._watches.pop(path)
        try:
            self._observer.unschedule(handle)  # type: ignore[arg-type]
        except (KeyError, ValueError):
            pass

    def poke(self) -> None:
        """On the loop: (re)start the debounce timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._rewatch()  # a link or the directory may have changed: watch the new target
        self.on_change()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._observer.stop()
        self._observer.join(timeout=2)
