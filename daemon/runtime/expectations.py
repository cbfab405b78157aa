"""Expectations: events a worker is about to cause itself, so they need not requeue.

Kubernetes' ReplicaSet controller uses the same idea. When nvirtd defines or starts
a domain, libvirt answers with DEFINED / STARTED events; reconciling again on them
would only re-read what was just written (5 RPCs per domain, measured as 40% of
a cold start of 1,000 domains). The domain kind records the events it expects before
it acts; the event source drops a matching event instead of queueing the key.
An expectation expires after `ttl` seconds, and any event nobody expected (an
edit, a destroy, a crash) still requeues, so nothing outside nvirtd is missed.
Thread-safe: libvirt's event thread consumes, so expected events never even wake
the asyncio loop.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable
from . import clock


class Expectations:
    """Events one action causes are expected as a group, in the order libvirt sends them;
    consuming one drops the group's earlier ones that did not come (QEMU sends RESUMED
    before STARTED, the test driver only STARTED): a missing one must not lie in wait
    for a real event of the same kind."""

    def __init__(self, *, clock: Callable[[], float] = clock.monotonic, ttl: float = 30.0) -> None:
        self.clock = clock
        self.ttl = ttl
        # key -> [(event, deadline, group, position in the group)]
        self._pending: dict[Hashable, list[tuple[str, float, int, int]]] = {}
        self._groups = itertools.count()
        self._lock = threading.Lock()

    def expect(self, key: Hashable, *events: str) -> None:
        if not events:
            return
        deadline, group = self.clock() + self.ttl, next(self._groups)
        with self._lock:
            self._pending.setdefault(key, []).extend((e, deadline, group, i) for i, e in enumerate(events))

    def forget(self, key: Hashable, *events: str) -> None:
        """The action failed: its events will not come."""
        with self._lock:
            pending = self._pending.get(key, [])
            for event in events:
                for i, entry in enumerate(pending):
                    if entry[0] == event:
                        del pending[i]
                        break
            if not pending:
                self._pending.pop(key, None)

    def consume(self, key: Hashable, event: str) -> bool:
        """True when `event` was expected for `key` (and is now used up)."""
        with self._lock:
            pending = self._pending.get(key)
            if not pending:
                return False
            now = self.clock()
            pending[:] = [p for p in pending if p[1] > now]
            hit = next((p for p in pending if p[0] == event), None)
            if hit is not None:
                _, _, group, position = hit
                pending[:] = [p for p in pending if p is not hit and not (p[2] == group and p[3] < position)]
            if not pending:
                del self._pending[key]
            return hit is not None
