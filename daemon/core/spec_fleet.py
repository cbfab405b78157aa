"""How a fleet's domain moves between hosts (see core/fleet_moves.py).

PURE: imports only the standard library and pydantic (part of the config format, spec.py).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .spec_base import Model


class OnTimeout(StrEnum):
    abort = "abort"
    postcopy = "postcopy"


class Migration(Model):
    timeout: int = Field(300, ge=10, le=86400, description="Seconds a live migration may take.")
    on_timeout: OnTimeout = Field(
        strict=False, default=OnTimeout.abort, description="abort: the VM goes on running where it was, and the "
        "move is tried again later. postcopy: the VM switches to the new host and fetches the memory not yet "
        "copied from the old one (it finishes, but if the network fails meanwhile the VM is lost).")
    auto_converge: bool = Field(
        True, description="Slow the guest's vCPUs down when its memory changes faster than it can be copied.")
    tls: bool = Field(
        False, description="Encrypt the migration stream (libvirt's migrate_tls_* settings on both hosts).")
    bandwidth: int | None = Field(
        None, ge=1, le=1_000_000, description="MiB/s the migration may use, memory and disks (default: as fast "
        "as the network goes).")


class Evacuate(StrEnum):
    migrate = "migrate"
    stop = "stop"
