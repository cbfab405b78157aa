"""The log writer thread of `nvirtd run` (runtime/logwriter.py): real threads, no mocks."""

from __future__ import annotations

import threading
import time

from daemon.runtime.logwriter import BackgroundSink, QueuedLogger


def test_every_line_arrives_in_the_order_each_thread_logged_it():
    delivered: list[list[str]] = []
    sink = BackgroundSink(lambda items: (time.sleep(0.001), delivered.append(items)))
    threads = [threading.Thread(target=lambda t=t: [sink.put(f"{t}:{i}") for i in range(500)]) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.flush()
    lines = [line for batch in delivered for line in batch]
    assert len(lines) == 8 * 500
    for t in range(8):
        assert [int(x.split(":")[1]) for x in lines if x.startswith(f"{t}:")] == list(range(500))
    assert len(delivered) < len(lines)  # what came while it wrote went out together


def test_flush_returns_once_what_came_before_is_written():
    delivered: list[str] = []
    sink = BackgroundSink(lambda items: (time.sleep(0.2), delivered.extend(items)))
    sink.put("first")
    sink.put("second")
    sink.flush()
    assert delivered == ["first", "second"]


def test_an_error_line_is_written_before_the_call_returns():
    delivered: list[str] = []
    logger = QueuedLogger(BackgroundSink(lambda items: (time.sleep(0.1), delivered.extend(items))))
    logger.info("reconciled")
    logger.error("daemon_failed")
    assert delivered == ["reconciled", "daemon_failed"]


def test_a_line_that_fails_to_write_does_not_stop_the_next_ones():
    delivered: list[str] = []

    def deliver(items):
        if "bad" in items:
            raise OSError("No space left on device")
        delivered.extend(items)
    sink = BackgroundSink(deliver)
    sink.put("bad")
    sink.flush()
    sink.put("good")
    sink.flush()
    assert delivered == ["good"]


def test_a_stuck_stream_does_not_hold_the_exit():
    never = threading.Event()
    sink = BackgroundSink(lambda items: never.wait())  # a pipe nobody reads
    sink.put("line")
    started = time.monotonic()
    sink.flush(timeout=0.3)
    assert time.monotonic() - started < 1.0
    never.set()
