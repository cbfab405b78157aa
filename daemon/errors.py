"""The small error taxonomy every layer speaks.

Adapters translate foreign exceptions (libvirtError, OSError, a failed subprocess)
into these at the boundary, so the reconciler can decide what to do from the type:
retry later (TemporaryError), report and wait for a change (PermanentError), or
show the user which file and field is wrong (ConfigError, see core.spec).
"""

from __future__ import annotations


class NvirtdError(Exception):
    """Base class of every error nvirtd raises on purpose."""


class TemporaryError(NvirtdError):
    """Worth retrying: libvirtd went away, a lock was busy, a build is still running."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(NvirtdError):
    """Retrying will not help until the config or the host changes."""


class CommandError(NvirtdError):
    """A subprocess failed; carries its argv, exit code and the tail of its output."""

    def __init__(self, argv: list[str], returncode: int, output_tail: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail
        super().__init__(f"{argv[0]} exited with status {returncode}: {output_tail.strip()[-500:]}")


class ConnectionLost(TemporaryError):
    """The libvirt connection is gone; the app reconnects and resyncs."""


class HypervisorError(TemporaryError):
    """libvirt refused or failed an operation; retried with backoff."""
