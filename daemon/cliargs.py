"""What the subcommands share: exit codes, and the settings a command line means."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import socket
from pathlib import Path

from .settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_INTERRUPTED = 0, 1, 2, 130
SERVICE_CONFIG_DIR = "/etc/nvirt.d"
INSTANCE_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,62}"


def default_instance(config_dir: str) -> str:
    """The service on /etc/nvirt.d is the default instance; any other config directory
    (`nvirtd run --once --config-dir ./try.json`) is an instance of its own, so trying a
    config against the host's libvirt never touches the service's VMs."""
    given = os.path.abspath(config_dir)
    if given == SERVICE_CONFIG_DIR or os.path.realpath(given) == os.path.realpath(SERVICE_CONFIG_DIR):
        return "default"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(given).stem).strip("-.")[:40] or "config"
    return f"{stem}-{hashlib.sha256(given.encode()).hexdigest()[:8]}"


def state_dir_of(args: argparse.Namespace) -> str:
    d = Settings().state_dir
    instance = getattr(args, "instance", None)
    return args.state_dir or (d if instance in (None, "default") else f"{d}/instances/{instance}")


def settings_from(args: argparse.Namespace) -> Settings:
    from .core.spec import VirtType
    d = Settings()
    config_dir = getattr(args, "config_dir", d.config_dir)
    instance = getattr(args, "instance", None) or default_instance(config_dir)
    own = instance == "default"
    return Settings(
        uri=getattr(args, "connect", d.uri), config_dir=config_dir, instance=instance,
        state_dir=getattr(args, "state_dir", None) or (d.state_dir if own else f"{d.state_dir}/instances/{instance}"),
        images_dir=getattr(args, "images_dir", None) or (d.images_dir if own else f"{d.images_dir}/nvirtd-{instance}"),
        virt_type=VirtType(getattr(args, "virt_type", d.virt_type.value)), workers=getattr(args, "workers", d.workers),
        build_command=tuple(shlex.split(args.build_command)) if getattr(args, "build_command", None) else d.build_command,
        build_jobs=getattr(args, "build_jobs", d.build_jobs),
        build_timeout=getattr(args, "build_timeout", d.build_timeout),
        start_concurrency=getattr(args, "start_concurrency", d.start_concurrency),
        resync_interval=getattr(args, "resync_interval", d.resync_interval),
        image_retention=getattr(args, "image_retention", d.image_retention),
        metrics=getattr(args, "metrics", d.metrics),
        watch=not getattr(args, "no_watch", False),
        trust_checks=not getattr(args, "no_trust_checks", False),
        host=getattr(args, "host", None) or socket.gethostname(),
        peers=tuple(getattr(args, "peer", None) or ()),
        peer_interval=getattr(args, "peer_interval", d.peer_interval),
    )


