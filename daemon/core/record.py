"""What one reconcile pass reads besides libvirt: the config's wish, the key's record, the time.

PURE: standard library only. `Record` is the only memory nvirtd keeps about an object
between passes (core/fold.py computes the next one from what a pass did); the
status nvirtd shows is rendered from it, never read back. What must survive a
restart is not kept here but in libvirt itself (the owner element records the
shutdown timeout, the live metadata when a graceful shutdown began).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ownership import DEFAULT_INSTANCE


@dataclass(frozen=True, slots=True)
class Now:
    mono: float  # for waits and deadlines
    wall: float  # for what is shown or persisted (a restarted daemon compares against it)


@dataclass(frozen=True, slots=True)
class Wanted:
    """The config's side of one key: what it declares, and whether nvirtd may act on it now."""

    name: str
    obj: Any = None  # RenderedDomain | RenderedNetwork; None: not declared (or no config read yet)
    source: str | None = None  # the file that declares it (or declared it: the owner element's)
    held: bool = False  # its file is broken, or a broken file may declare it: keep the last good state
    conflict: bool = False  # declared by two files
    instance: str = DEFAULT_INSTANCE  # the nvirtd instance planning: it acts on its own objects only
    users: tuple[str, ...] = ()  # a network: the declared domains whose NICs use it
    config_errors: tuple[str, ...] = ()  # errors of its file that name it (shown in its status)
    elsewhere: str | None = None  # a domain a fleet's config places on another host ("": on none)
    host: str = ""  # this host's name in the fleet (`nvirtd run --host`)
    drained: bool = False  # placed here, but this host is drained: `elsewhere` is its alternative


@dataclass(frozen=True, slots=True)
class ShutdownProgress:
    """When a graceful shutdown of a domain began, and when ACPI was last sent."""

    started_at: float
    last_sent_at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StartRecord:
    """Starts in a row that each ended in a quick death, and the last one's time."""

    count: int
    last: float


@dataclass(frozen=True, slots=True)
class Record:
    """One key's memory between passes, and what its status shows."""

    phase: str | None = None  # of the last pass; None before the first
    conditions: frozenset[str] = frozenset()
    message: str | None = None
    error: str | None = None
    last_actions: tuple[str, ...] = ()  # the last thing nvirtd did to it stays visible until the next
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    shutdown: ShutdownProgress | None = None
    starts: StartRecord | None = None
    reattach_pending: bool = False  # a network restart whose guests' NICs are not all back yet
    failures: int = 0  # passes in a row that failed
