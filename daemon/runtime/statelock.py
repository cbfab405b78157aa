"""One daemon per state directory: an flock on the directory itself.

Two daemons on one state dir would keep two records of the same overlays and GC
roots and fight over status.json. The lock is taken on the directory (an flock
works on a read-only file descriptor, so a read-only state dir can still be
locked) and is released by the kernel when the process ends, however it ends;
the PID beside it is only there to name the holder in the error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

PID_FILE = "nvirtd.pid"


class StateDirLocked(Exception):
    """Another process holds the state directory."""


class StateLock:
    def __init__(self, state_dir: str) -> None:
        self.dir = Path(state_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StateDirLocked naming the holder; OSError if the
        directory cannot be made or opened."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder()
            who = f"nvirtd (pid {holder})" if holder else "another nvirtd"
            raise StateDirLocked(f"{who} is already running with state directory {self.dir}; "
                                 "one daemon per state directory (give this one its own --state-dir "
                                 "or --instance)") from None
        self._fd = fd
        with contextlib.suppress(OSError):  # read-only state dir: the lock still holds
            (self.dir / PID_FILE).write_text(f"{os.getpid()}\n")

    def holder(self) -> int | None:
        try:
            return int((self.dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                if self.holder() == os.getpid():
                    (self.dir / PID_FILE).unlink()
            os.close(self._fd)
            self._fd = None
