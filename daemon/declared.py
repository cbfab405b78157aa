"""The names the config declares, as the running daemon last read it, in the state dir.

`nvirtd purge` runs in its own process and must never delete the disk of a domain
that is still declared, including by a file that is broken right now (whose last
good content only the daemon knows), held in a conflict, or not defined yet.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from .core.desired import Rendered
from .runtime.atomicfile import atomic_write

DECLARED_FILE = "declared.json"
_last_written: dict[str, str] = {}


def declared_names(rendered: Rendered) -> dict[str, list[str]]:
    state = rendered.state
    result: dict[str, list[str]] = {}
    for kind, objs in (("domain", state.domains), ("network", state.networks)):
        names = set(objs) | {n for k, n in state.conflicts if k == kind} | {n for k, n in rendered.held_keys if k == kind}
        result[f"{kind}s"] = sorted(names)
    result["broken_files"] = sorted(state.broken_files)
    return result


def write_declared(state_dir: str, rendered: Rendered) -> None:
    text = json.dumps(declared_names(rendered), indent=1)
    if _last_written.get(state_dir) == text:
        return
    with contextlib.suppress(OSError):  # a state dir that cannot be written is reported by the status
        atomic_write(Path(state_dir) / DECLARED_FILE, text)
        _last_written[state_dir] = text


def read_declared(state_dir: str) -> dict[str, Any] | None:
    try:
        return json.loads((Path(state_dir) / DECLARED_FILE).read_text())
    except (OSError, ValueError):
        return None
