"""The daemon's link to libvirt: connect with backoff, notice a loss, reconnect.

Its state (connected, or unreachable since when and why) is part of the status and
of systemd's STATUS=, and is logged once per change, not once per retry: a hung
libvirtd must not look like a healthy host in `nvirtd status`, nor flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from .adapters.hypervisor_protocol import HypervisorLike
from .core import backoff
from .core.backoff import Backoff
from .errors import NvirtdError
from .runtime.notify import Notifier
from .status import StatusStore

log = structlog.get_logger("nvirtd.libvirt")


class LibvirtLink:
    def __init__(self, hv: HypervisorLike, status: StatusStore, notifier: Notifier, *,
                 on_connected: Callable[[], Awaitable[None]]) -> None:
        self.hv = hv
        self.status = status
        self.notifier = notifier
        self.on_connected = on_connected
        self.up = False
        self.connects = 0  # successful (re)connects in this process
        self._lost = asyncio.Event()

    def lost(self, reason: str) -> None:
        """The connection failed (a call said so, or libvirt closed it). Idempotent."""
        self._lost.set()
        if self.up:
            self.up = False
            log.warning("libvirt_connection_lost", uri=self.hv.uri, reason=reason)
            self.status.set_libvirt(self.hv.uri, "unreachable", reason)
            self.notifier.status(self.status.summary())

    async def connect_with_backoff(self, stop: asyncio.Event) -> bool:
        """Connect (and run on_connected), retrying while libvirtd is away or hung.
        False when asked to stop meanwhile."""
        attempts = 0
        while not stop.is_set():
            try:
                await self.hv.connect()
                await self.on_connected()
            except NvirtdError as exc:
                attempts += 1
                delay = backoff.delay(Backoff.connect, attempts)
                await self.hv.close(timeout=1.0)
                if self.status.set_libvirt(self.hv.uri, "unreachable", str(exc)):
                    log.warning("libvirt_connect_failed", uri=self.hv.uri, error=str(exc),
                                detail="retrying with backoff; logged again when it connects")
                else:
                    log.debug("libvirt_connect_failed", uri=self.hv.uri, error=str(exc), retry_in=delay)
                self.notifier.status(self.status.summary())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            self.up = True
            self.connects += 1
            self._lost.clear()
            self.status.set_libvirt(self.hv.uri, "connected")
            if self.connects > 1:
                log.info("libvirt_reconnected", uri=self.hv.uri)
            return True
        return False

    async def reconnect_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._lost.wait()
            if stop.is_set():
                return
            await self.hv.close(timeout=2.0)
            if not await self.connect_with_backoff(stop):
                return
