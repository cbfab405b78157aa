"""Write a file so readers see the old or the new content, never half of either."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def atomic_write(path: Path | str, text: str) -> None:
    """Temp file in the same directory, fsync, rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a full disk fails the write or the fsync: never leave the half-written temp file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
