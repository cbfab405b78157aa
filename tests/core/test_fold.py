"""fold / next_look / the backoff table, as tables: a pass's facts in, the key's next record out."""

from __future__ import annotations

import pytest

from daemon.core import backoff
from daemon.core.backoff import Backoff
from daemon.core.fold import Failure, Outcome, fold, forgotten, next_look
from daemon.core.plan import Act, Action, Phase, Plan
from daemon.core.record import Now, Record, ShutdownProgress, StartRecord

START, SHUTDOWN, REATTACH = Action(Act.start), Action(Act.shutdown), Action(Act.reattach_nics)
T = Now(mono=100.0, wall=1_000_100.0)


def running(*actions, **kw):
    return Plan(actions=tuple(actions), phase=Phase.running, **kw)


FOLDS = [
    pytest.param(Record(), Outcome(running(START), done=(START,)), {"starts": StartRecord(1, 100.0)},
                 id="a-first-start-counts-one"),
    pytest.param(Record(starts=StartRecord(1, 90.0)), Outcome(running(START), done=(START,)),
                 {"starts": StartRecord(2, 100.0)}, id="a-start-10-s-after-the-last-is-a-quick-death"),
    pytest.param(Record(starts=StartRecord(3, 0.0)), Outcome(running(START), done=(START,)),
                 {"starts": StartRecord(1, 100.0)}, id="a-start-long-after-the-last-starts-the-count-again"),
    pytest.param(Record(starts=StartRecord(1, 90.0)), Outcome(running(START), failure=Failure("refused")),
                 {"starts": StartRecord(1, 90.0), "failures": 1, "phase": "error", "error": "refused"},
                 id="a-start-that-failed-is-not-counted"),
    pytest.param(Record(), Outcome(Plan(actions=(SHUTDOWN,), phase=Phase.stopping), done=(SHUTDOWN,)),
                 {"shutdown": ShutdownProgress(100.0, 100.0)}, id="a-first-acpi-begins-the-shutdown-clock"),
    pytest.param(Record(shutdown=ShutdownProgress(80.0, 95.0)),
                 Outcome(Plan(actions=(SHUTDOWN,), phase=Phase.stopping, shutdown=ShutdownProgress(80.0, 95.0)),
                         done=(SHUTDOWN,)),
                 {"shutdown": ShutdownProgress(80.0, 100.0)}, id="a-resent-acpi-keeps-the-clock"),
    pytest.param(Record(shutdown=ShutdownProgress(80.0, 95.0)), Outcome(running()), {"shutdown": None},
                 id="a-plan-that-stops-nothing-ends-the-shutdown"),
    pytest.param(Record(), Outcome(running(START, REATTACH), done=(START,), failure=Failure("ip: no such device")),
                 {"reattach_pending": True}, id="a-reattach-that-failed-half-way-is-remembered"),
    pytest.param(Record(reattach_pending=True), Outcome(running(REATTACH), done=(REATTACH,)),
                 {"reattach_pending": False}, id="a-reattach-done-is-forgotten"),
    pytest.param(Record(failures=4, phase="error", error="x"), Outcome(running()),
                 {"failures": 0, "phase": "running", "error": None}, id="a-good-pass-clears-the-failures"),
    pytest.param(Record(failures=1, phase="running", message="m"),
                 Outcome(running(START), failure=Failure("gone", Backoff.connection)),
                 {"failures": 1, "phase": "running", "message": "m"},
                 id="a-lost-connection-teaches-nothing-about-the-object"),
    pytest.param(Record(shutdown=ShutdownProgress(80.0, 95.0), starts=StartRecord(2, 90.0)),
                 Outcome(None, failure=Failure("libvirt: internal error")),
                 {"shutdown": ShutdownProgress(80.0, 95.0), "starts": StartRecord(2, 90.0), "phase": "error",
                  "failures": 1}, id="a-look-that-failed-keeps-the-shutdown-clock-and-the-start-count"),
    pytest.param(Record(last_actions=("define",)), Outcome(running()), {"last_actions": ("define",)},
                 id="the-last-thing-done-stays-shown"),
    pytest.param(Record(), Outcome(Plan(phase=Phase.error, message="disk gone")),
                 {"phase": "error", "error": "disk gone", "message": None}, id="an-error-plan-shows-as-error"),
]


@pytest.mark.parametrize("record,outcome,expected", FOLDS)
def test_fold(record, outcome, expected):
    folded = fold(record, outcome, T)
    assert {k: getattr(folded, k) for k in expected} == expected


LOOKS = [
    pytest.param(Record(), Outcome(running(), ), None, id="in-sync-waits-for-a-change"),
    pytest.param(Record(), Outcome(Plan(requeue_after=5.0)), 5.0, id="the-plan-says-when"),
    pytest.param(Record(failures=1), Outcome(running(), failure=Failure("x")), 1.0, id="first-failure-1s"),
    pytest.param(Record(failures=4), Outcome(running(), failure=Failure("x")), 8.0, id="fourth-failure-8s"),
    pytest.param(Record(failures=40), Outcome(running(), failure=Failure("x")), 300.0, id="failures-capped-5min"),
    pytest.param(Record(failures=1), Outcome(running(), failure=Failure("x", at_least=30.0)), 30.0,
                 id="an-error-that-asks-for-longer-gets-it"),
    pytest.param(Record(failures=1), Outcome(running(), failure=Failure("x", Backoff.permanent)), 300.0,
                 id="a-permanent-error-is-not-hammered"),
    pytest.param(Record(failures=9), Outcome(running(), failure=Failure("x", Backoff.connection)), 1.0,
                 id="a-lost-connection-retries-in-1s"),
]


@pytest.mark.parametrize("record,outcome,expected", LOOKS)
def test_next_look(record, outcome, expected):
    assert next_look(record, outcome) == expected


@pytest.mark.parametrize("kind,counts,expected", [
    (Backoff.crash_loop, [1, 2, 3, 4, 9], [0, 5, 10, 20, 300]),
    (Backoff.build, [1, 2, 7], [60, 120, 3600]),
    (Backoff.connect, [1, 2, 7], [0.5, 1, 30]),
])
def test_backoff_rows(kind, counts, expected):
    assert [backoff.delay(kind, c) for c in counts] == expected


def test_a_removed_object_needs_no_record_unless_its_removal_failed():
    assert forgotten(Outcome(Plan(phase=Phase.removed)))
    assert forgotten(Outcome(Plan(actions=(Action(Act.undefine),), phase=Phase.removed)))
    assert not forgotten(Outcome(Plan(actions=(Action(Act.undefine),), phase=Phase.removed), failure=Failure("x")))
