"""sd_notify: tell systemd we are ready, reloading, stopping, alive, and how things are.

A no-op without NOTIFY_SOCKET (run from a terminal, in tests that do not bind one).
The watchdog ping is sent from a task on the event loop itself, so a blocked loop
stops pinging and systemd restarts the daemon (VMs are not touched: KillMode).
"""

from __future__ import annotations

import asyncio
import os
import time

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier(debug=False) if self.enabled else None
        self._last_status: str | None = None

    def send(self, *fields: str, important: bool = False) -> bool:
        """Send one datagram. A unix datagram send blocks while the receiver's queue is
        full, which would freeze the event loop: status and watchdog messages are
        dropped then (the next one follows soon); state changes wait up to 2 s."""
        sock = getattr(self._sd, "socket", None)  # sdnotify's connected socket
        if sock is None:
            return False
        sock.settimeout(2.0 if important else 0.0)
        try:
            sock.sendall("\n".join(fields).encode())
            return True
        except OSError:
            return False  # like sd_notify(3): a missing or busy systemd is not our error

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []), important=True)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", important=True)

    def stopping(self) -> None:
        self.send("STOPPING=1", important=True)

    def status(self, text: str) -> None:
        if text != self._last_status and self.send(f"STATUS={text}"):
            self._last_status = text

    def watchdog_interval(self) -> float | None:
        """Half of WATCHDOG_USEC when the watchdog is meant for this process, else None."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not self.enabled or not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000

    async def watchdog_loop(self, stop: asyncio.Event) -> None:
        interval = self.watchdog_interval()
        if interval is None:
            return
        while not stop.is_set():
            self.send("WATCHDOG=1")
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
