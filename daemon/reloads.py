"""When a reload is done: after every key it queued has had a pass that began after it.

`nvirtd reload` (and systemd's READY=1 after RELOADING=1) waits for this, so that
`nvirtd status` right after a reload shows the reload's effects: status.json's
reload.finished_at is set, and READY=1 sent, once the last such pass ends.
"""

from __future__ import annotations

from collections.abc import Hashable

from .runtime import clock
from .runtime.notify import Notifier
from .status import StatusStore


class ReloadTracker:
    def __init__(self, status: StatusStore, notifier: Notifier) -> None:
        self.status = status
        self.notifier = notifier
        self.ready_on_ack = False  # an explicit reload said RELOADING=1: READY=1 once done
        self._unacked: set[Hashable] = set()  # keys the last reload queued, not reconciled since
        self._since = 0.0  # a pass that began before this does not count

    def begin(self, started_wall: float, errors: list[str], keys: set) -> None:
        self.status.reload = {"generation": self.status.reload["generation"] + 1, "started_at": started_wall,
                              "finished_at": None, "errors": errors}
        self._unacked = set(keys)
        self._since = clock.monotonic()
        if not self._unacked:
            self._ack()

    def passed(self, key: Hashable, began: float) -> None:
        if key in self._unacked and began >= self._since:
            self._unacked.discard(key)
            if not self._unacked:
                self._ack()

    def _ack(self) -> None:
        self.status.reload["finished_at"] = clock.wall()
        self.status.mark_dirty()
        self.status.flush()
        if self.ready_on_ack:
            self.ready_on_ack = False
            self.notifier.ready(self.status.summary())
