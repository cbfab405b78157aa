"""The one way nvirtd runs a subprocess: an argv list, logged, with a bounded output tail.

Never a shell. A non-zero exit raises CommandError carrying the argv, the exit
code and the tail of the combined output, which is what the user needs to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ..errors import CommandError, PermanentError

log = structlog.get_logger("nvirtd.proc")
TAIL_BYTES = 4000


@dataclass(frozen=True, slots=True)
class Result:
    stdout: str
    stderr: str


async def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
              timeout: float | None = None, on_line: Callable[[str], None] | None = None,
              **fields: object) -> Result:
    """Run argv to its end. `on_line` gets each line of stderr as it comes (a build's
    progress); the stderr kept is then its last TAIL_BYTES."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("run() takes a non-empty list of strings")
    log.debug("command_started", argv=argv, **fields)
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=full_env, cwd=cwd,
            start_new_session=True,  # its own process group: a timeout stops its children too
        )
    except FileNotFoundError:
        raise PermanentError(f"{argv[0]}: command not found (install it, or fix PATH)") from None
    try:
        communicate = proc.communicate() if on_line is None else _streaming(proc, on_line)
        out, err = await asyncio.wait_for(communicate, timeout)
    except (TimeoutError, asyncio.CancelledError):
        # the whole group: a child that kept the output pipes open would keep us waiting
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        tail = (stderr or stdout)[-TAIL_BYTES:]
        log.warning("command_failed", argv=argv, returncode=proc.returncode, stderr_tail=tail[-1000:], **fields)
        raise CommandError(argv, proc.returncode or -1, tail)
    log.debug("command_finished", argv=argv, **fields)
    return Result(stdout, stderr)


async def _streaming(proc: asyncio.subprocess.Process, on_line: Callable[[str], None]) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    tail = bytearray()

    async def lines() -> None:
        pending = b""  # read in chunks, not readline(): a line of any length is fine
        while chunk := await stderr.read(65536):
            tail.extend(chunk)
            del tail[:-TAIL_BYTES]
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                on_line(line.decode(errors="replace"))
            pending = pending[-TAIL_BYTES:]
        if pending:
            on_line(pending.decode(errors="replace"))

    out, _ = await asyncio.gather(proc.stdout.read(), lines())
    await proc.wait()
    return out, bytes(tail)
