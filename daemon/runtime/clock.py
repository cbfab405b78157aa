"""The daemon's two clocks, in one place, so that a simulation can run them virtually.

Everything that waits or compares times (backoffs, shutdown timeouts, expectations,
crash-loop windows) reads `monotonic()`; what is shown to people or persisted
(status timestamps, when a shutdown began) reads `wall()`. asyncio's own timers use
the event loop's clock: a simulation installs a loop whose time() is the same
virtual clock (tests/simulation).
"""

from __future__ import annotations

import time
from collections.abc import Callable

_monotonic: Callable[[], float] = time.monotonic
_wall: Callable[[], float] = time.time


def monotonic() -> float:
    return _monotonic()


def wall() -> float:
    return _wall()


def use(*, monotonic: Callable[[], float], wall: Callable[[], float]) -> None:
    """Replace both clocks (a simulation); `use(monotonic=time.monotonic, wall=time.time)` restores them."""
    global _monotonic, _wall
    _monotonic, _wall = monotonic, wall
