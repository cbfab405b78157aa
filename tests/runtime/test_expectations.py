"""Expectations: a worker's own events are dropped, nobody else's, and none lies in wait."""

from __future__ import annotations

from daemon.runtime.expectations import Expectations


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_expected_event_is_consumed_once_and_a_second_one_is_real():
    e = Expectations(clock=Clock())
    e.expect("web", "defined")
    assert e.consume("web", "defined")
    assert not e.consume("web", "defined"), "a second DEFINED is someone else's edit"


def test_an_event_of_another_key_or_kind_is_not_consumed():
    e = Expectations(clock=Clock())
    e.expect("web", "started")
    assert not e.consume("db", "started") and not e.consume("web", "stopped")
    assert e.consume("web", "started")


def test_a_resumed_that_never_came_before_started_does_not_swallow_a_real_resume():
    """The test driver sends STARTED without RESUMED: the expected RESUMED of that start
    must go with the STARTED, or a `virsh resume` within the next 30 s would be missed."""
    e = Expectations(clock=Clock())
    e.expect("web", "resumed", "started")
    assert e.consume("web", "started")
    assert not e.consume("web", "resumed")


def test_qemus_resumed_then_started_are_both_consumed():
    e = Expectations(clock=Clock())
    e.expect("web", "resumed", "started")
    assert e.consume("web", "resumed") and e.consume("web", "started")


def test_expectations_expire():
    clock = Clock()
    e = Expectations(clock=clock, ttl=30)
    e.expect("web", "defined")
    clock.now = 31
    assert not e.consume("web", "defined")


def test_a_failed_action_forgets_its_events():
    e = Expectations(clock=Clock())
    e.expect("web", "defined")
    e.forget("web", "defined")
    assert not e.consume("web", "defined")
