"""reconcile(key): observe -> plan -> execute -> fold, the same for every kind of object.

Whatever put a key in the queue (a reload, a libvirt event, a finished build, the
safety resync), the work is the same, and running it twice in a row does nothing
the second time. A kind (domain_kind.py, network_kind.py) says how to look at its
objects and how to carry out a plan; the decisions are its pure plan function, and
the only state kept between passes is the key's Record, which core/fold.py computes
from the facts of the pass. The status shown for a key is rendered from its record.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from .configstore import ConfigStore
from .core.backoff import Backoff
from .core.fold import Failure, Outcome, fold, forgotten, next_look
from .core.keys import Key, Kind
from .core.plan import Action, Plan
from .core.record import Now, Record, Wanted
from .errors import ConnectionLost, NvirtdError, PermanentError, TemporaryError
from .runtime import clock
from .status import StatusStore

log = structlog.get_logger("nvirtd.reconciler")


class KindOps(Protocol):
    kind: Kind

    async def observe(self, name: str, desired: Any) -> Any: ...
    def plan(self, wanted: Wanted, obs: Any, record: Record, now: Now) -> Plan: ...
    async def execute(self, name: str, desired: Any, obs: Any, plan: Plan, done: list[Action]) -> Any: ...
    def facts(self, desired: Any) -> dict[str, Any]: ...


def now() -> Now:
    return Now(mono=clock.monotonic(), wall=clock.wall())


class Pipeline:
    def __init__(self, kinds: list[KindOps], config: ConfigStore, status: StatusStore, *,
                 wake: Callable[[Key], None], connection_lost: Callable[[str], None],
                 on_pass: Callable[[str, Failure | None, tuple[Action, ...], float], None] | None = None) -> None:
        self.kinds = {k.kind: k for k in kinds}
        self.on_pass = on_pass  # metrics: kind, failure, actions done, seconds
        self.config = config
        self.status = status
        self.wake = wake
        self.connection_lost = connection_lost
        self.records: dict[Key, Record] = {}
        self.passes = 0

    async def look(self, key: Key) -> tuple[Wanted, Any, Plan]:
        """Observe and plan, nothing else: what `nvirtd plan` prints."""
        ops = self.kinds[key.kind]
        desired = self.config.declared(key)
        obs = await ops.observe(key.name, desired)
        owner = obs.owner
        wanted = self.config.wanted(key, desired, owner.file if owner is not None else None)
        return wanted, obs, ops.plan(wanted, obs, self.records.get(key, Record()), now())

    async def reconcile(self, key: Key) -> float | None:
        """One pass for one key; returns the delay after which to look again, if any."""
        key = Key(Kind(key[0]), key[1])
        started = clock.monotonic()
        self.passes += 1
        record = self.records.get(key, Record())
        done: list[Action] = []
        plan: Plan | None = None
        wanted, disks, failure = None, None, None
        try:
            wanted, obs, planned = await self.look(key)
            plan = planned
            disks = await self.kinds[key.kind].execute(key.name, wanted.obj, obs, planned, done)
        except Exception as exc:  # noqa: BLE001 - every failure is a fact for fold; bugs are logged as such
            failure = self._failure(key, exc)
        outcome = Outcome(plan=plan, done=tuple(done), failure=failure, disks=disks)
        folded = fold(record, outcome, now())
        after = next_look(folded, outcome)
        self._log(key, outcome, started, after)
        if self.on_pass is not None:
            self.on_pass(key.kind.value, failure, outcome.done, clock.monotonic() - started)
        if forgotten(outcome):
            self.records.pop(key, None)
            self.status.remove(key.kind.value, key.name)
        else:
            self.records[key] = folded
            self._render(key, folded, wanted)
        if failure is None and plan is not None:
            for other in plan.wake:
                self.wake(other)
        return after

    def _failure(self, key: Key, exc: Exception) -> Failure:
        """An exception, as a fact: which backoff row it falls in. OSError (a full or read-only
        disk, a vanished file) is translated here, at the edge of the shell."""
        if isinstance(exc, ConnectionLost):
            self.connection_lost(str(exc))
            return Failure(str(exc), Backoff.connection)
        if isinstance(exc, PermanentError):
            return Failure(str(exc), Backoff.permanent)
        if isinstance(exc, TemporaryError):
            return Failure(str(exc), Backoff.failure, at_least=exc.delay)
        if isinstance(exc, NvirtdError):
            return Failure(str(exc), Backoff.failure)
        if isinstance(exc, OSError):
            where = f"{exc.filename}: " if exc.filename else ""
            return Failure(f"{where}{exc.strerror or os.strerror(exc.errno or 0) or exc}", Backoff.failure)
        log.exception("reconcile_crashed", **{key.kind.value: key.name})
        return Failure(f"internal error: {exc!r}", Backoff.failure)

    def _log(self, key: Key, outcome: Outcome, started: float, after: float | None) -> None:
        plan, failure = outcome.plan, outcome.failure
        ms = round((clock.monotonic() - started) * 1000, 1)
        if failure is not None:
            level = 30 if failure.backoff == Backoff.connection else 40
            log.log(level, "reconcile_failed", **{key.kind.value: key.name}, error=failure.message,
                    done=[str(a) for a in outcome.done], retry_in=after, ms=ms)
            return
        assert plan is not None
        level = 20 if plan.actions else 10
        if not log.is_enabled_for(level):
            return  # a restart's 1,000 no-op passes log nothing at info: build nothing for it either
        log.log(
            level, "reconciled", **{key.kind.value: key.name}, phase=plan.phase.value,
            actions=[str(a) for a in plan.actions], conditions=sorted(c.value for c in plan.conditions), ms=ms,
            **({"detail": plan.message} if plan.message and plan.actions else {}),
        )

    def _render(self, key: Key, record: Record, wanted: Wanted | None) -> None:
        if record.phase is None:
            return  # nothing learnt yet (the connection went before the first look)
        error = record.error
        if error is None and wanted is not None and wanted.config_errors:
            error = "; ".join(wanted.config_errors)
        where = {"file": wanted.source} if wanted is not None else {}  # a failed look learnt no file
        if wanted is not None and wanted.obj is not None:
            where.update(self.kinds[key.kind].facts(wanted.obj))
        self.status.update(key.kind.value, key.name, phase=record.phase, conditions=sorted(record.conditions),
                           message=record.message, error=error, last_actions=list(record.last_actions),
                           disks=record.disks, **where)
