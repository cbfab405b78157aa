"""The small error taxonomy every layer speaks.

Adapters translate foreign exceptions (libvirtError, a failed subprocess) into these
at the boundary; the pipeline (pipeline.py) turns each into a failure with its row
of the backoff table (core/backoff.py): retry soon, doubling (TemporaryError, at
least its own delay), reconnect first (ConnectionLost), or look again only after
5 minutes, since retrying will not help until something changes (PermanentError).
An OSError that reaches the pipeline (a full disk, a vanished file) is reported with
its file and reason and retried like a temporary error. Config mistakes are
ConfigError (core.config), shown with file and field, never raised into a pass.
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


class HotplugUnsupported(HypervisorError):
    """The libvirt driver cannot plug devices into a running guest (libvirt's test driver):
    such changes wait for the next boot."""


class StartupError(Exception):
    """The daemon cannot start as asked (a metrics address taken, ...): one line, exit 1."""
