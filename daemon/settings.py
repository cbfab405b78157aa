"""Daemon settings: where things are and how hard to work. Set from the command line."""

from __future__ import annotations

from dataclasses import dataclass

from .core.ownership import DEFAULT_INSTANCE
from .core.spec import VirtType


@dataclass(frozen=True, slots=True)
class Settings:
    uri: str = "qemu:///system"
    config_dir: str = "/etc/nvirt.d"
    state_dir: str = "/var/lib/nvirtd"
    images_dir: str = "/var/lib/libvirt/images"
    virt_type: VirtType = VirtType.auto
    workers: int = 24  # concurrent reconciles (measured: 24 converge 1,000 domains 1.15x faster than 16, 16 1.6x faster than 4)
    start_concurrency: int = 0  # guests starting at once; 0: as many as workers (see docs/operations.md)
    connections: int = 4  # libvirt connections for calls (libvirtd serves 5 requests per connection at once)
    build_command: tuple[str, ...] | None = None  # None: the host's own builder (adapters/image_builders.py)
    build_jobs: int = 2
    build_timeout: float = 4 * 3600.0  # a nix build running longer is stopped and retried with backoff
    resync_interval: float = 600.0
    # a base image no overlay uses loses its GC root after this long (None: never); see image_gc.py
    image_retention: float | None = 7 * 86400.0
    metrics: str | None = None  # --metrics: unix:PATH or HOST:PORT of the Prometheus endpoint (daemon/metrics.py)
    gc_interval: float = 3600.0  # how often roots are looked at (and once a minute after start)
    watch: bool = True
    debounce: float = 0.2
    drain_timeout: float = 3.0  # in-flight reconciles at SIGTERM; the whole stop stays under 5 s
    trust_checks: bool = True
    instance: str = DEFAULT_INSTANCE
    host: str = ""  # this host's name in a fleet's config (`--host`; cliargs gives the host name)
    peers: tuple[tuple[str, str], ...] = ()  # the fleet's other hosts: (name, libvirt URI)
    peer_interval: float = 30.0  # how often another host that may hold a domain is asked again
