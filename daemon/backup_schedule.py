"""Scheduled backups: a domain's `backup: {every, keep, to}` runs `nvirtd backup` for it.

The record of what ran is the backup folder itself (its whole backups, by UTC name), so
a backup missed while the host was off runs once at start-up, and a restart never runs
one twice. Backups run one at a time, in a thread (libvirt and qemu-img block), never
while the daemon stops. A failure is retried with the failure row of the backoff table
(1 s doubling to 5 min), logged, and shown in the status under `daemon.backups.NAME`,
with the progress of the one running (`backing-up 42%`). After each success the oldest
whole backups beyond `keep` are deleted; the newest whole backup never is, and a
failed one never counts (it leaves no folder).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import structlog

from .adapters.hypervisor_threads import in_own_thread
from .backup_command import complete_backups, prune_backups, take_backup
from .core import backoff
from .core.backoff import Backoff
from .core.domain_xml import RenderedDomain
from .errors import NvirtdError
from .runtime import clock

log = structlog.get_logger("nvirtd.backups")
TICK = 30.0  # how often due backups are looked for
PENDING_LOOK = 2.0  # how soon again, while a domain with a schedule is not defined yet


def last_backup_at(to: str, name: str) -> float | None:
    """Wall time of the newest whole backup of `name`, from its folder's name."""
    whole = complete_backups(to, name)
    if not whole:
        return None
    with contextlib.suppress(ValueError):
        return float(calendar.timegm(time.strptime(os.path.basename(whole[-1]), "%Y%m%dT%H%M%SZ")))
    return None


class BackupScheduler:
    def __init__(self, *, uri: str, instance: str, domains: Callable[[], dict[str, RenderedDomain]],
                 report: Callable[[dict[str, Any]], None], defined: Callable[[str], bool] = lambda name: True) -> None:
        self.uri = uri
        self.instance = instance
        self.domains = domains  # the declared domains now (the config store's last good)
        self.report = report  # called with the whole backups status whenever it changes
        self.defined = defined  # whether nvirtd has defined the domain yet (a new one may still be building)
        self.state: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # name -> (failures in a row, next try, monotonic)
        self._wake = asyncio.Event()

    def due(self) -> list[tuple[str, RenderedDomain]]:
        now, mono = clock.wall(), clock.monotonic()
        found = []
        for name, d in sorted(self.domains().items()):
            plan = d.spec.backup
            if plan is None or not self.defined(name):
                continue
            failures = self._failures.get(name)
            if failures is not None and mono < failures[1]:
                continue
            last = last_backup_at(plan.to, name)
            if last is None or now - last >= plan.interval:
                found.append((name, d))
        return found

    async def loop(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        await ready.wait()  # the domains exist (a missed backup of a VM being defined would fail)
        while not stop.is_set():
            for name, d in self.due():
                if stop.is_set():
                    return
                await self._run(name, d)
            retries = [at - clock.monotonic() for _count, at in self._failures.values()]
            if any(d.spec.backup is not None and not self.defined(n) for n, d in self.domains().items()):
                retries.append(PENDING_LOOK)  # a domain still being defined (or built): look again soon
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.1, min([TICK, *retries])))
            self._wake.clear()

    def wake(self) -> None:
        """Look for due backups now (the config changed, or the daemon stops)."""
        self._wake.set()

    async def _run(self, name: str, d: RenderedDomain) -> None:
        plan = d.spec.backup
        assert plan is not None
        loop = asyncio.get_running_loop()
        entry = self.state.setdefault(name, {})
        entry.update(phase="backing-up", progress=0, started_at=clock.wall())
        self.report(self.state)

        def progress(done: int, total: int) -> None:  # in the backup's thread
            pct = int(100 * done / total) if total else 0
            loop.call_soon_threadsafe(self._progress, name, pct)

        log.info("backup_started", domain=name, to=plan.to)
        try:
            # a thread of its own: a backup stuck on a hung libvirtd must not hold a stopping daemon
            folder, manifest, seconds = await in_own_thread(
                functools.partial(take_backup, self.uri, name, self.instance, plan.to, progress),
                timeout=None, name="backup")
            pruned = await in_own_thread(functools.partial(prune_backups, plan.to, name, plan.keep),
                                         timeout=None, name="backup")
        except Exception as exc:  # noqa: BLE001 - a backup, whatever went wrong, never stops the daemon
            if not isinstance(exc, (NvirtdError, OSError)):
                log.exception("backup_crashed", domain=name)
            count = self._failures.get(name, (0, 0.0))[0] + 1
            delay = backoff.delay(Backoff.failure, count)
            self._failures[name] = (count, clock.monotonic() + delay)
            entry.update(phase="failed", progress=None, error=str(exc), retry_in=delay)
            log.error("backup_failed", domain=name, error=str(exc), retry_in=delay)
        else:
            self._failures.pop(name, None)
            entry.update(phase="done", progress=None, error=None, last=folder, consistency=manifest["consistency"],
                         next_at=clock.wall() + plan.interval, kept=len(complete_backups(plan.to, name)))
            log.info("backup_done", domain=name, folder=folder, seconds=round(seconds, 1), pruned=pruned)
        self.report(self.state)

    def _progress(self, name: str, pct: int) -> None:
        entry = self.state.setdefault(name, {})
        if entry.get("progress") != pct:
            entry["progress"] = pct
            self.report(self.state)
