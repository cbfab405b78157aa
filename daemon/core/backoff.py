"""Every wait nvirtd backs off by, in one table.

PURE: standard library only. A failed pass, a guest that keeps dying, a nix build
that fails and a connection that will not come up each wait longer the more often
they fail, capped; the numbers live here, so the policy is read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Backoff(StrEnum):
    failure = "failure"  # a pass failed with a temporary error (libvirt refused, a disk was full)
    permanent = "permanent"  # retrying will not help until something changes: a slow safety look only
    connection = "connection"  # a call found the connection gone: the link reconnects, the key waits
    crash_loop = "crash-loop"  # the guest stopped soon after its start: next start after a pause
    build = "build"  # a nix build failed
    connect = "connect"  # libvirtd does not answer a connect


@dataclass(frozen=True, slots=True)
class Rule:
    first: float  # the wait after the first counted event
    cap: float
    free: int = 0  # this many events cost no wait at all


TABLE = {
    Backoff.failure: Rule(first=1.0, cap=300.0),
    Backoff.permanent: Rule(first=300.0, cap=300.0),
    Backoff.connection: Rule(first=1.0, cap=1.0),
    Backoff.crash_loop: Rule(first=5.0, cap=300.0, free=1),  # the first restart is at once
    Backoff.build: Rule(first=60.0, cap=3600.0),
    Backoff.connect: Rule(first=0.5, cap=30.0),
}


def delay(kind: Backoff, count: int, *, first: float | None = None) -> float:
    """The wait after `count` events of `kind` in a row (count >= 1): first, 2x, 4x, ... cap.
    `first` scales the row (a test's 0.2 s build retry), the cap stays."""
    rule = TABLE[kind]
    paid = count - rule.free
    if paid <= 0:
        return 0.0
    return min((rule.first if first is None else first) * 2 ** (paid - 1), rule.cap)
