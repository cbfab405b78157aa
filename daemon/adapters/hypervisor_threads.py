"""The threads libvirt runs in: its event loop (one per process), and the connect and
close calls that a hung libvirtd can block forever (each in a thread of its own, given
up after a timeout). Part of the libvirt adapter (hypervisor.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

T = TypeVar("T")

_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None


def register_event_loop() -> None:
    """Start libvirt's event loop thread (once per process, before any connection)."""
    global _event_thread
    with _event_lock:
        if _event_thread is not None:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _event_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _event_thread.start()


def close_quietly(conns: list[Any]) -> None:
    for conn in conns:
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


async def in_own_thread(fn: Callable[[], T], *, timeout: float | None,
                         cleanup: Callable[[T], None] | None = None, name: str = "libvirt-connect") -> T:
    """fn() in a new daemon thread, awaited at most `timeout` seconds (None: as long as it
    takes). A call that is given up, or whose awaiting task is cancelled, goes on in its
    thread without holding the exit (asyncio.to_thread's executor is joined by asyncio.run);
    `cleanup` gets its result if it ever ends after a timeout."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    abandoned = threading.Event()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        (future.set_result if ok else future.set_exception)(value)

    def body() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            if not abandoned.is_set():
                loop.call_soon_threadsafe(deliver, False, exc)
            return
        if abandoned.is_set():
            if cleanup is not None:
                cleanup(result)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(deliver, True, result)

    threading.Thread(target=body, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        abandoned.set()
        if cleanup is not None:  # a result that was already on its way to the loop
            future.add_done_callback(lambda f: None if f.cancelled() or f.exception() else cleanup(f.result()))
        raise
