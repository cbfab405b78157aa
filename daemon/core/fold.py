"""fold(record, outcome, now) -> record: what a pass leaves behind for the next one.

PURE: standard library only. The shell observes, plans (core/domain_plan.py,
core/network_plan.py), executes, and folds the outcome, facts only, into the key's
record: the only state nvirtd keeps about an object between passes. When to look
again is computed from the folded record too (`next_look`), with the one backoff
table in core/backoff.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import backoff
from .backoff import Backoff
from .domain_plan import quick_death
from .plan import Act, Action, Phase, Plan
from .record import Now, Record, ShutdownProgress, StartRecord


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a pass stopped short: the error's message and which backoff row applies."""

    message: str
    backoff: Backoff = Backoff.failure
    at_least: float | None = None  # the error asked for this long a wait


@dataclass(frozen=True, slots=True)
class Outcome:
    """Facts of one pass: the plan it carried out, which of its actions were done (in
    order; a failure stops the rest), and what the overlays look like afterwards."""

    plan: Plan | None  # None: the pass failed before it could plan (the look failed)
    done: tuple[Action, ...] = ()
    failure: Failure | None = None
    disks: dict[str, dict[str, Any]] | None = None  # None: not looked at (kept from before)


def fold(record: Record, outcome: Outcome, now: Now) -> Record:
    plan, failure = outcome.plan, outcome.failure
    if plan is None:  # nothing was looked at, nothing done: the memory stays as it was
        assert failure is not None
        if failure.backoff == Backoff.connection:
            return record
        return dataclasses.replace(record, phase=Phase.error.value, error=failure.message, message=None,
                                   failures=record.failures + 1)
    done = {a.kind for a in outcome.done}
    shutdown = plan.shutdown
    if Act.shutdown in done:
        shutdown = ShutdownProgress(started_at=shutdown.started_at if shutdown else now.mono, last_sent_at=now.mono)
    starts = record.starts
    if Act.start in done:
        count = starts.count + 1 if starts is not None and quick_death(record, now.mono) else 1
        starts = StartRecord(count=count, last=now.mono)
    reattach = record.reattach_pending
    if any(a.kind == Act.reattach_nics for a in plan.actions):  # a failure half-way is not forgotten
        reattach = Act.reattach_nics not in done
    if Act.undefine in done:
        reattach = False
    memory = dict(shutdown=shutdown, starts=starts, reattach_pending=reattach,
                  disks=record.disks if outcome.disks is None else outcome.disks)
    if failure is not None and failure.backoff == Backoff.connection:
        return dataclasses.replace(record, **memory)  # nothing learnt about the object itself
    shown = tuple(str(a) for a in outcome.done) or record.last_actions
    if failure is not None:
        return dataclasses.replace(record, **memory, phase=Phase.error.value, error=failure.message,
                                   message=None, last_actions=shown, failures=record.failures + 1)
    error = plan.message if plan.phase == Phase.error else None
    return Record(**memory, phase=plan.phase.value, conditions=frozenset(c.value for c in plan.conditions),
                  message=None if error else plan.message, error=error, last_actions=shown, failures=0)


def next_look(record: Record, outcome: Outcome) -> float | None:
    """When to reconcile the key again (None: only when something changes)."""
    failure = outcome.failure
    if failure is None:
        assert outcome.plan is not None
        return outcome.plan.requeue_after
    count = 1 if failure.backoff == Backoff.connection else max(record.failures, 1)
    return max(backoff.delay(failure.backoff, count), failure.at_least or 0.0)


def forgotten(outcome: Outcome) -> bool:
    """A key whose object is gone (or going: undefined) and no longer declared needs no record."""
    return outcome.failure is None and outcome.plan is not None and outcome.plan.phase == Phase.removed
