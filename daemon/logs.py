"""structlog set-up: fields in the journal under systemd, readable on a terminal,
JSON lines otherwise.

Every line about a domain carries `domain=NAME`. Under systemd it becomes the journal
field DOMAIN (see runtime/journal.py), so `journalctl -u nvirtd DOMAIN=web` follows one
VM and `journalctl -u nvirtd -p warning` shows only problems; elsewhere the JSON lines
can be filtered with `jq 'select(.domain=="web")'`.
"""

from __future__ import annotations

import logging
import sys

import structlog

from .runtime import journal
from .runtime.logwriter import BackgroundSink, QueuedLogger, write_lines

AUTO = "auto"


_background: BackgroundSink | None = None  # the writer thread of `nvirtd run`, if configured


def configure(level: str = "info", *, json: bool | None = None, stream=None, journal_socket: str | None = AUTO,
              cache: bool = False, background: bool = False) -> None:
    """journal_socket: AUTO (when stderr is systemd's journal stream), a path, or None.
    cache: each module's logger is built once (the CLI; tests reconfigure, so they do not).
    background: lines are written by a thread of their own (runtime/logwriter.py; `nvirtd run`)."""
    global _background
    flush()
    stream = stream or sys.stderr
    if journal_socket == AUTO:
        journal_socket = journal.socket_for(stream)
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    _background = None
    if journal_socket is not None:
        sink = journal.JournalLogger(journal_socket, fallback=stream)
        last, factory = journal.as_event_dict, (lambda *_args: sink)
        if background:
            _background = BackgroundSink(lambda entries: [sink.msg(e) for e in entries])
    else:
        if json is None:
            json = not stream.isatty()
        last = structlog.processors.JSONRenderer(sort_keys=False) if json else structlog.dev.ConsoleRenderer(colors=False)
        factory = structlog.PrintLoggerFactory(file=stream)
        if background:
            _background = BackgroundSink(write_lines(stream))
    if _background is not None:
        queued = QueuedLogger(_background)
        factory = lambda *_args: queued  # noqa: E731
    structlog.configure(
        processors=processors + [last],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )


def flush() -> None:
    """Every line logged so far written (before os._exit, or a reconfiguration)."""
    if _background is not None:
        _background.flush()
