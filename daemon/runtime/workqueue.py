"""A keyed, deduplicating, rate-limited work queue (controller-runtime's, in asyncio).

No product knowledge here: keys are opaque hashables.

Guarantees:
- a key added several times while it waits is handed out once;
- a key is never handed to two workers at once; one re-added while it is being
  processed is handed out again after done();
- add(key, delay) keeps the earliest due time (how long to wait after a failure is
  the caller's business: core/backoff.py).
The bookkeeping is a plain class driven by an injectable clock (KeyQueue), so
its semantics are tested without sleeping; AsyncWorkQueue puts asyncio on top.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Any
from . import clock

Clock = Callable[[], float]
MIN_WAIT = 1e-3  # seconds


class KeyQueue:
    def __init__(self, *, clock: Clock = clock.monotonic) -> None:
        self.clock = clock
        self._due: dict[Hashable, float] = {}  # waiting keys -> due time
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._processing: set[Hashable] = set()
        self._dirty: dict[Hashable, float] = {}  # re-added while processing -> due time

    def __len__(self) -> int:
        return len(self._due) + len(self._dirty)

    @property
    def processing(self) -> frozenset[Hashable]:
        return frozenset(self._processing)

    @property
    def waiting(self) -> frozenset[Hashable]:
        return frozenset(self._due) | frozenset(self._dirty)

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        due = self.clock() + max(delay, 0.0)
        if key in self._processing:
            self._dirty[key] = min(due, self._dirty.get(key, due))
            return
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))

    def pop_ready(self) -> Hashable | None:
        """The next due key (now marked processing), or None."""
        now = self.clock()
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:  # superseded by an earlier add
                heapq.heappop(self._heap)
                continue
            if due > now:
                return None
            heapq.heappop(self._heap)
            del self._due[key]
            self._processing.add(key)
            return key
        return None

    def next_due(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            due = self._dirty.pop(key)
            self.add(key, max(0.0, due - self.clock()))


class AsyncWorkQueue:
    """KeyQueue plus waiting: get() sleeps until a key is due."""

    def __init__(self, **kwargs: Any) -> None:
        self.keys = KeyQueue(**kwargs)
        self._changed = asyncio.Event()
        self._closed = False

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        self.keys.add(key, delay)
        self._changed.set()

    def done(self, key: Hashable) -> None:
        self.keys.done(key)
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    def idle(self, horizon: float = 0.001) -> bool:
        """Nothing being processed and nothing due within `horizon` seconds."""
        due = self.keys.next_due()
        return not self.keys.processing and (due is None or due > self.keys.clock() + horizon)

    async def get(self) -> Hashable | None:
        """The next due key, or None once the queue is closed."""
        while not self._closed:
            key = self.keys.pop_ready()
            if key is not None:
                return key
            self._changed.clear()
            due = self.keys.next_due()
            # never a wait shorter than a clock can tell from none: a key due 1e-15 s from now
            # would be waited for again and again while the clock stands still
            timeout = None if due is None else max(MIN_WAIT, due - self.keys.clock())
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
        return None
