"""Virtual time for the real daemon: an asyncio loop whose clock jumps to the next timer.

When nothing is ready to run, the loop does not wait: it moves its clock to the
earliest scheduled timer, so a 600 s shutdown timeout or a 5-minute backoff passes
in microseconds, in the same order it would in real time. The daemon's own clocks
(daemon.runtime.clock) read the same virtual time. Work handed to "threads"
(asyncio.to_thread, run_in_executor) runs inline: no real concurrency, so a seed
replays exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import time
from typing import Any, Callable

from daemon.runtime import clock

EPOCH = 1_800_000_000.0  # virtual wall clock = EPOCH + virtual seconds


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def install(self) -> None:
        clock.use(monotonic=lambda: self.now, wall=lambda: EPOCH + self.now)

    @staticmethod
    def uninstall() -> None:
        clock.use(monotonic=time.monotonic, wall=time.time)


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """A "pool" that runs each job at once, in the caller (asyncio insists on the type)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting coroutine, as a thread would
            future.set_exception(exc)
        return future


class Deadlock(RuntimeError):
    """Nothing ready, no timer: the program waits for something that never comes."""


class Livelock(RuntimeError):
    """The program runs and runs while its clock stands still: a busy loop."""


SPIN_LIMIT = 50_000  # loop iterations within one virtual millisecond before it counts as a busy loop


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, vclock: VirtualClock) -> None:
        super().__init__()
        self.vclock = vclock
        self.set_default_executor(InlineExecutor())
        self._spins = 0
        self._spun_at = -1.0

    def time(self) -> float:
        return self.vclock.now

    def _run_once(self) -> None:  # type: ignore[override]
        scheduled = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
        if not self._ready:  # type: ignore[attr-defined]
            if not scheduled:
                raise Deadlock("nothing to run and no timer")
            self.vclock.now = max(self.vclock.now, scheduled[0]._when)
        if self.vclock.now - self._spun_at > 0.001:  # a loop creeping by a rounding error is still a busy loop
            self._spun_at, self._spins = self.vclock.now, 0
        self._spins += 1
        if self._spins > SPIN_LIMIT:
            raise Livelock(f"{SPIN_LIMIT} loop iterations within 1 ms at t={self.vclock.now:.2f}s")
        super()._run_once()  # type: ignore[misc]
