"""Watch /etc/nvirt.d with watchdog (inotify) and ask for a reload, debounced.

Only hands a signal to the loop: the watchdog thread calls
loop.call_soon_threadsafe(), the loop debounces a burst of events (an editor's
temp file + rename, `sed -i`, vim's backup dance) into one reload. The parent
directory is watched too, so a directory that is removed, replaced or created
later is noticed and watched again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..configfiles import is_config_name


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
    def __init__(self, directory: str, on_change: Callable[[], None], *, debounce: float = 0.2) -> None:
        self.directory = Path(directory).absolute()
        self.on_change = on_change
        self.debounce = debounce
        self.loop = asyncio.get_running_loop()
        self._observer = Observer()
        self._dir_watch = None
        self._watched_inode: int | None = None
        self._timer: asyncio.TimerHandle | None = None

    def relevant(self, path: str, event_type: str = "modified") -> bool:
        p = Path(path)
        if p == self.directory:  # the directory itself came, went or was replaced
            return event_type in ("created", "deleted", "moved")
        return p.parent == self.directory and is_config_name(p.name)

    def start(self) -> None:
        handler = _Handler(self)
        self._observer.schedule(handler, str(self.directory.parent), recursive=False)
        self._handler = handler
        self._watch_dir()
        self._observer.start()

    def _watch_dir(self) -> None:
        """(Re)watch the directory when it appeared or was replaced; otherwise leave the
        watch alone (dropping it even briefly could miss a save)."""
        try:
            inode = self.directory.stat().st_ino if self.directory.is_dir() else None
        except OSError:
            inode = None
        if self._dir_watch is not None and inode is not None and inode == self._watched_inode:
            return
        self._watched_inode = inode
        if self._dir_watch is not None:
            try:
                self._observer.unschedule(self._dir_watch)
            except (KeyError, ValueError):
                pass
            self._dir_watch = None
        if self.directory.is_dir():
            try:
                self._dir_watch = self._observer.schedule(self._handler, str(self.directory), recursive=False)
            except OSError:
                self._dir_watch = None

    def poke(self) -> None:
        """On the loop: (re)start the debounce timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._watch_dir()  # the directory may have been replaced: watch the new inode
        self.on_change()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._observer.stop()
        self._observer.join(timeout=5)
