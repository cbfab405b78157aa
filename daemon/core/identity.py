"""Deterministic identities: UUIDs, MACs, overlay paths, GC root names.

PURE: standard library only. Everything here is a function of its inputs, so a
domain keeps its UUID and MACs across redefines, daemon restarts and hosts.
"""

from __future__ import annotations

import functools
import hashlib
import uuid as uuidlib
from pathlib import PurePosixPath

# A fixed namespace for uuid5: changing it would change every derived UUID.
NVIRTD_UUID_NAMESPACE = uuidlib.UUID("6f1c1d2e-9a0b-5c61-8e2f-6e7669727464")
MAC_PREFIX = "52:54:00"


@functools.lru_cache(maxsize=65536)  # asked on every render and every reload's cross-file check
def domain_uuid(name: str, given: str | None = None) -> str:
    if given:
        return str(uuidlib.UUID(given))
    return str(uuidlib.uuid5(NVIRTD_UUID_NAMESPACE, f"domain/{name}"))


def network_uuid(name: str, given: str | None = None) -> str:
    if given:
        return str(uuidlib.UUID(given))
    return str(uuidlib.uuid5(NVIRTD_UUID_NAMESPACE, f"network/{name}"))


def interface_mac(domain_uuid_: str, nic_name: str, given: str | None = None) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range."""
    if given:
        return given.lower()
    digest = hashlib.sha256(f"{domain_uuid_}/{nic_name}".encode()).digest()
    return MAC_PREFIX + "".join(f":{b:02x}" for b in digest[:3])


def overlay_path(images_dir: str, domain: str, disk: str) -> str:
    return str(PurePosixPath(images_dir) / f"{domain}-{disk}.qcow2")


def bridge_name(network: str) -> str:
    """Linux limits interface names to 15 characters: nv- plus a stable hash."""
    return "nv-" + hashlib.sha256(network.encode()).hexdigest()[:10]


def gc_root_name(store_path: str) -> str:
    """The GC root file name for a store path: its basename (hash-name) is unique."""
    return PurePosixPath(store_path).name
