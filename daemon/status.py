"""What nvirtd knows about each domain and network, for people and scripts.

The daemon keeps one Entry per object, writes them (debounced) to
<state-dir>/status.json with an atomic rename, and summarises them in one line for
systemd's STATUS=. `nvirtd status` reads the file; it never talks to the daemon.

What is wrong with the daemon's own surroundings comes first, in both: libvirt
unreachable (and since when), a state directory it cannot write. A status that
cannot be written is not a reason to stop reconciling: the daemon says so in the
log (once per change) and in STATUS=, and writes again when it can.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import structlog

from .core.build_progress import describe
from .runtime import clock
from .runtime.atomicfile import atomic_write

log = structlog.get_logger("nvirtd.status")
STATUS_FILE = "status.json"


@dataclass(slots=True)
class Entry:
    kind: str
    name: str
    phase: str = "pending"
    conditions: list[str] = field(default_factory=list)
    message: str | None = None
    error: str | None = None
    file: str | None = None
    changed_at: float = field(default_factory=time.time)
    last_actions: list[str] = field(default_factory=list)
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # NIC name -> MAC: `nvirtd status` names the guest's addresses by it (it reads them from
    # libvirt when it runs; the daemon never stores addresses: see hypervisor_addresses)
    interfaces: dict[str, str] = field(default_factory=dict)


class StatusStore:
    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / STATUS_FILE
        self.entries: dict[tuple[str, str], Entry] = {}
        self.config_errors: list[str] = []
        self.reload: dict[str, Any] = {"generation": 0, "finished_at": None, "errors": []}
        self.daemon: dict[str, Any] = {"pid": os.getpid(), "started_at": clock.wall()}
        self.libvirt: dict[str, Any] = {"uri": None, "state": "connecting", "since": clock.wall(), "error": None}
        self.write_error: str | None = None
        self.warnings: list[str] = []  # e.g. config entries skipped (not regular files)
        self.dirty = True
        self.on_dirty: Callable[[], None] = lambda: None

    def set_libvirt(self, uri: str, state: str, error: str | None = None) -> bool:
        """Record the connection's state; True when it changed (worth one log line)."""
        changed = state != self.libvirt["state"]
        since = clock.wall() if changed else self.libvirt["since"]
        self.libvirt = {"uri": uri, "state": state, "since": since, "error": error}
        self.mark_dirty()
        return changed

    def mark_dirty(self) -> None:
        self.dirty = True
        self.on_dirty()

    def update(self, kind: str, name: str, **values: Any) -> Entry:
        entry = self.entries.get((kind, name))
        if entry is None:
            entry = self.entries[(kind, name)] = Entry(kind=kind, name=name)
        before = (entry.phase, entry.conditions, entry.message, entry.error)
        shown = (entry.file, entry.last_actions, entry.disks, entry.interfaces)
        for key, value in values.items():
            setattr(entry, key, value)
        if (entry.phase, entry.conditions, entry.message, entry.error) != before:
            entry.changed_at = clock.wall()
            self.mark_dirty()
        elif (entry.file, entry.last_actions, entry.disks, entry.interfaces) != shown:
            self.mark_dirty()
        return entry

    def remove(self, kind: str, name: str) -> None:
        if self.entries.pop((kind, name), None) is not None:
            self.mark_dirty()

    def problems(self) -> list[str]:
        """What is wrong around the daemon, most important first."""
        found = []
        link = self.libvirt
        if link["state"] != "connected" and link["uri"]:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(link["since"]))
            what = "unreachable" if link["state"] == "unreachable" else "not connected yet"
            found.append(f"libvirt at {link['uri']} {what} since {since}"
                         + (f": {link['error']}" if link["error"] else ""))
        if self.write_error:
            found.append(self.write_error)
        return found

    def summary(self) -> str:
        domains = [e for e in self.entries.values() if e.kind == "domain"]
        counts: dict[str, int] = {}
        for e in domains:
            counts[e.phase] = counts.get(e.phase, 0) + 1
        order = ["running", "building", "stopping", "defined", "stopped", "pending", "error"]
        parts = [f"{counts[p]} {p}" for p in order if counts.get(p)]
        noun = "domain" if len(domains) == 1 else "domains"
        text = f"{len(domains)} {noun}" + (": " + ", ".join(parts) if parts else "")
        flagged = sum(1 for e in domains if e.conditions)
        if flagged:
            text += f"; {flagged} with conditions"
        if self.config_errors:
            text += f"; {len(self.config_errors)} config error{'s' if len(self.config_errors) > 1 else ''}"
        return "; ".join(self.problems() + [text])

    def to_json(self) -> dict[str, Any]:
        return {
            "daemon": self.daemon,
            "libvirt": self.libvirt,
            "summary": self.summary(),
            "config_errors": self.config_errors,
            "warnings": self.warnings,
            "reload": self.reload,
            "domains": [_entry_dict(e) for k, e in sorted(self.entries.items()) if k[0] == "domain"],
            "networks": [_entry_dict(e) for k, e in sorted(self.entries.items()) if k[0] == "network"],
        }

    def flush(self) -> bool:
        """Write status.json if something changed; False when it could not be written
        (it stays dirty, and the next flush tries again)."""
        if not self.dirty:
            return True
        try:
            atomic_write(self.path, json.dumps(self.to_json(), separators=(",", ":"), default=str))
        except OSError as exc:
            error = f"cannot write status to {self.path}: {exc.strerror or exc}"
            if error != self.write_error:
                log.error("status_write_failed", path=str(self.path), error=exc.strerror or str(exc))
                self.write_error = error
            return False
        if self.write_error is not None:
            log.info("status_written_again", path=str(self.path))
            self.write_error = None
            atomic_write(self.path, json.dumps(self.to_json(), separators=(",", ":"), default=str))
        self.dirty = False
        return True


_FIELDS = tuple(Entry.__dataclass_fields__)


def _entry_dict(entry: Entry) -> dict[str, Any]:
    """asdict() without its deep copies: status.json of 1,000 domains is written often."""
    return {name: getattr(entry, name) for name in _FIELDS}


def load(state_dir: str) -> dict[str, Any]:
    return json.loads((Path(state_dir) / STATUS_FILE).read_text())


def render_table(data: dict[str, Any]) -> str:
    lines = [f"nvirtd: {data['summary']}"]
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    for kind in ("networks", "domains"):
        rows = data.get(kind, [])
        if not rows:
            continue
        lines.append("")
        lines.append(f"{'NAME' if kind == 'domains' else 'NETWORK':<24} {'PHASE':<10} {'CONDITIONS':<28} {'SINCE':<20} DETAIL")
        for e in rows:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["changed_at"]))
            done = e.get("last_actions") or []
            detail = e.get("error") or e.get("message") or (f"last did: {', '.join(done)}" if done else "")
            lines.append(f"{e['name']:<24} {e['phase']:<10} {','.join(e['conditions']) or '-':<28} {since:<20} {detail}")
            for nic, addrs in (e.get("addresses") or {}).items():
                shown = ", ".join(f"{a['address']} ({a['source']})" for a in addrs) or "no address yet"
                lines.append(f"  {nic}: {shown}")
    daemon = data.get("daemon") or {}
    builds: list[str] = []
    for source, b in sorted((daemon.get("builds") or {}).items()):
        builds += [f"{source}  (for {', '.join(b.get('domains') or []) or '-'})", f"  {describe(b, time.time())}"]
    _section(lines, "image builds", builds)
    backups = sorted((daemon.get("backups") or {}).items())
    _section(lines, "backups", [f"{name:<22} {_backup_line(b)}" for name, b in backups])
    _section(lines, "config errors", data.get("config_errors") or [])
    return "\n".join(lines)


def _section(lines: list[str], title: str, rows: list[str]) -> None:
    """A titled block after the tables, its rows indented; nothing when it has none."""
    if rows:
        lines.extend(["", f"{title}:", *(f"  {row}" for row in rows)])


def _backup_line(b: dict[str, Any]) -> str:
    if b.get("phase") == "backing-up":
        return f"backing-up {b.get('progress') or 0}%"
    if b.get("phase") == "failed":
        return f"failed (retry in {b.get('retry_in', 0):.0f} s): {b.get('error')}"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b["next_at"])) if b.get("next_at") else "?"
    return f"last {b.get('last')} ({b.get('kept')} kept, {b.get('consistency')}); next {when}"
