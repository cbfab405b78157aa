"""Logging straight to journald with fields, when stderr is the journal.

Under systemd, every log line written to stderr becomes a journal entry whose only
field is its text, all at one priority. Spoken natively (one datagram per entry on
journald's socket, see systemd's "Native Journal Protocol"), every structlog key
becomes a field, so that

    journalctl -u nvirtd DOMAIN=web        # one VM
    journalctl -u nvirtd -p warning        # only what went wrong

work. systemd sets JOURNAL_STREAM to the device and inode of the stream it gave the
service; the native protocol is used only when stderr is that stream. A datagram
that cannot be sent (journald busy or gone) is written to stderr instead: logging
never blocks and never loses a line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
from typing import Any, TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
MAX_VALUE = 48 * 1024  # bytes per field: long build logs are cut, the datagram stays small
_NOT_A_FIELD_CHAR = re.compile(r"[^A-Z0-9_]")


def socket_for(stream: TextIO, environ: dict[str, str] | None = None, path: str = JOURNAL_SOCKET) -> str | None:
    """journald's socket when `stream` is the journal stream systemd handed us, else None."""
    env = os.environ if environ is None else environ
    try:
        dev, ino = (int(x) for x in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return None
    return path if (st.st_dev, st.st_ino) == (dev, ino) and os.path.exists(path) else None


def field_name(key: str) -> str:
    """A structlog key as a journal field name: upper case, [A-Z0-9_], not starting with _."""
    name = _NOT_A_FIELD_CHAR.sub("_", key.upper()).lstrip("_")
    return name if name and not name[0].isdigit() else f"F_{name}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def message(event_dict: dict[str, Any]) -> str:
    """What journalctl shows by default: the event, then key=value pairs."""
    rest = " ".join(f"{k}={_text(v)}" for k, v in event_dict.items()
                    if k not in ("event", "level", "timestamp"))
    return f"{event_dict.get('event', '')} {rest}".strip()


def encode(fields: dict[str, str]) -> bytes:
    """The native protocol: KEY=value lines; a value with a newline as KEY, its length
    (64-bit little endian), the bytes."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")[:MAX_VALUE]
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def entry(event_dict: dict[str, Any], identifier: str = "nvirtd") -> dict[str, str]:
    fields = {"MESSAGE": message(event_dict),
              "PRIORITY": str(PRIORITIES.get(str(event_dict.get("level", "info")), 6)),
              "SYSLOG_IDENTIFIER": identifier}
    for key, value in event_dict.items():
        if key != "timestamp":  # journald stamps every entry itself
            fields.setdefault(field_name(key), _text(value))
    return fields


class JournalLogger:
    """A structlog logger whose lines are event dicts, sent to journald."""

    def __init__(self, path: str, fallback: TextIO | None = None) -> None:
        self.path = path
        self.fallback = fallback or sys.stderr
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def msg(self, event_dict: dict[str, Any]) -> None:
        try:
            self.sock.sendto(encode(entry(event_dict)), self.path)
        except OSError:
            self.fallback.write(json.dumps(event_dict, default=str) + "\n")
            self.fallback.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def as_event_dict(_logger: Any, _name: str, event_dict: dict[str, Any]) -> tuple[tuple[dict[str, Any]], dict]:
    """The last structlog processor: hand the whole event dict to JournalLogger.msg."""
    return (event_dict,), {}
