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

import threading
from collections.abc import Callable, Hashable
from . import clock


class Expectations:
    def __init__(self, *, clock: Callable[[], float] = clock.monotonic, ttl: float = 30.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self._pending: dict[Hashable, list[tuple[str, float]]] = {}
        self._lock = threading.Lock()

    def expect(self, key: Hashable, *events: str) -> None:
        deadline = self.clock() + self.ttl
        with self._lock:
            self._pending.setdefault(key, []).extend((e, deadline) for e in events)

    def forget(self, key: Hashable, *events: str) -> None:
        """The action failed: its events will not come."""
        with self._lock:
            self._forget(key, events)

    def _forget(self, key: Hashable, events: tuple[str, ...]) -> None:
        pending = self._pending.get(key, [])
        for event in events:
            for i, (e, _) in enumerate(pending):
                if e == event:
                    del pending[i]
                    break
        if not pending:
            self._pending.pop(key, None)

    def consume(self, key: Hashable, event: str) -> bool:
        """True when `event` was expected for `key` (and is now used up)."""
        with self._lock:
            return self._consume(key, event)

    def _consume(self, key: Hashable, event: str) -> bool:
        pending = self._pending.get(key)
        if not pending:
            return False
        now = self.clock()
        pending[:] = [(e, d) for e, d in pending if d > now]
        for i, (e, _) in enumerate(pending):
            if e == event:
                del pending[i]
                if not pending:
                    del self._pending[key]
                return True
        if not pending:
            del self._pending[key]
        return False
