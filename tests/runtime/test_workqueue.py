"""Work queue semantics, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio
import heapq

import pytest

from daemon.runtime.workqueue import AsyncWorkQueue, KeyQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def q(clock):
    return KeyQueue(clock=clock)


def drain(q):
    out = []
    while (key := q.pop_ready()) is not None:
        out.append(key)
    return out


def test_key_added_twice_while_waiting_runs_once(q):
    q.add("a")
    q.add("a")
    q.add("b")
    assert drain(q) == ["a", "b"]
    assert drain(q) == []


def test_never_two_workers_on_one_key_and_readd_during_processing_runs_after(q):
    q.add("a")
    assert q.pop_ready() == "a"
    q.add("a")  # an event arrives while "a" is being reconciled
    assert q.pop_ready() is None  # not handed out while processing
    q.done("a")
    assert q.pop_ready() == "a"


def test_delay_keeps_earliest_due_time(q, clock):
    q.add("a", delay=10)
    q.add("a", delay=2)
    q.add("a", delay=50)
    clock.now += 1.9
    assert q.pop_ready() is None
    clock.now += 0.2
    assert q.pop_ready() == "a"


def test_readd_during_processing_keeps_requested_delay(q, clock):
    q.add("a")
    q.pop_ready()
    q.add("a", delay=5)
    q.done("a")
    assert q.pop_ready() is None
    clock.now += 5
    assert q.pop_ready() == "a"


def test_order_is_by_due_time(q, clock):
    q.add("late", delay=3)
    q.add("soon", delay=1)
    q.add("now")
    clock.now += 5
    assert drain(q) == ["now", "soon", "late"]


async def test_async_get_wakes_on_add_and_on_due_time():
    q = AsyncWorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"
    q.done("x")
    q.add("y", delay=0.05)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await asyncio.wait_for(q.get(), 1) == "y"
    assert loop.time() - t0 >= 0.04


async def test_async_close_releases_waiting_workers():
    q = AsyncWorkQueue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0.01)
    q.close()
    assert await asyncio.wait_for(asyncio.gather(*getters), 1) == [None, None, None]


def test_a_key_due_a_rounding_error_ahead_is_handed_out_on_a_virtual_clock():
    """Found by the simulator (seed 37): a due time turned into a timeout and back did not
    reach the due time, and get() waited 1e-15 s again and again while the clock stood
    still. The wait is at least 1 ms."""
    from tests.simulation.vloop import VirtualClock, VirtualLoop
    vclock = VirtualClock()
    vclock.now = 46.1
    loop = VirtualLoop(vclock)
    try:
        async def main():
            queue = AsyncWorkQueue(clock=lambda: vclock.now)
            queue.keys._due["k"] = due = 46.1 + 7.105427357601002e-15  # one ulp ahead
            heapq.heappush(queue.keys._heap, (due, 0, "k"))
            return await queue.get()
        assert loop.run_until_complete(main()) == "k"
        assert vclock.now - 46.1 < 0.01
    finally:
        loop.close()
