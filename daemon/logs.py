"""structlog set-up: readable on a terminal, JSON lines otherwise (journald keeps them).

Every line about a domain carries `domain=NAME`, so `journalctl -u nvirtd -o cat |
jq 'select(.domain=="web")'` (or grep '"domain": "web"') follows one VM.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, json: bool | None = None, stream=None) -> None:
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer(sort_keys=False) if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=processors + [renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
