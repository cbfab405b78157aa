"""Log lines written by a thread of their own, for `nvirtd run`.

A write to stderr, or a datagram to journald, releases the GIL. With two dozen
workers waiting on libvirt, getting it back cost the event loop about 0.1 ms a line,
ten times what making the line took: at a cold start of 1,000 domains, the 4,000
lines logged at info (the default) cost half a second. The loop now only hands each
line over (a queue put, which keeps the GIL), and this thread writes them, all that
came meanwhile at once.

Nothing is lost on a clean exit and nothing is reordered: flush() waits until every
line handed over before it is written; it runs at exit (atexit) and before
os._exit; a line at error or above is flushed at once, so that it is out before
whatever went wrong can go further.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

FLUSH_TIMEOUT = 2.0  # a stuck stream (a full pipe nobody reads) must not hold an exit


class BackgroundSink:
    """`deliver(items)` is called in the writer thread with every item put since its last call."""

    def __init__(self, deliver: Callable[[list[Any]], None]) -> None:
        self._deliver = deliver
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Return once everything put before is written (or after `timeout`)."""
        if threading.current_thread() is self._thread:
            return
        written = threading.Event()
        self._queue.put(written)
        written.wait(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    batch.append(self._queue.get_nowait())
            items = []
            for item in batch:
                if isinstance(item, threading.Event):  # a flush: what came before it goes first
                    self._write(items)
                    items = []
                    item.set()
                else:
                    items.append(item)
            self._write(items)

    def _write(self, items: list[Any]) -> None:
        if items:
            with contextlib.suppress(Exception):  # a log line must never take the writer down
                self._deliver(items)


class QueuedLogger:
    """A structlog logger that hands its lines (text, or journal event dicts) to a BackgroundSink."""

    def __init__(self, sink: BackgroundSink) -> None:
        self._sink = sink

    def msg(self, message: Any) -> None:
        self._sink.put(message)

    def urgent(self, message: Any) -> None:
        self._sink.put(message)
        self._sink.flush()

    debug = info = warning = warn = log = msg
    error = critical = exception = fatal = err = failure = urgent


def write_lines(stream: Any) -> Callable[[list[str]], None]:
    def deliver(lines: list[str]) -> None:
        stream.write("".join(line + "\n" for line in lines))  # one write for the batch
        stream.flush()
    return deliver
