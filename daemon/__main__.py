"""nvirtd's command line: run | check | plan | status | reload | drain | schema | reference |
snapshot | backup | restore | gc | purge.

Every subcommand behaves like a Unix tool: errors are one line on stderr with a
non-zero exit, `nvirtd status | head` ends quietly, Ctrl-C exits 130 without a
traceback. Set NVIRTD_DEBUG=1 to see the traceback of an internal error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from .settings import Settings

from .cliargs import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, INSTANCE_PATTERN


def _instance(value: str) -> str:
    if not re.fullmatch(INSTANCE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid instance name (letters, digits, '.', '_', '-')")
    return value


def _number(kind: type, value: str) -> float:
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {'a whole number' if kind is int else 'a number'}") from None


def _metrics_address(value: str) -> str:
    if value.startswith("unix:"):
        if value.startswith("unix:/"):
            return value
        raise argparse.ArgumentTypeError(f"{value!r}: a unix socket is unix:/ABSOLUTE/PATH")
    host, sep, port = value.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) < 65536:
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither unix:/ABSOLUTE/PATH nor HOST:PORT")


def _positive_int(value: str) -> int:
    number = int(_number(int, value))
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return number


def _count(value: str) -> int:
    number = int(_number(int, value))
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def _positive_float(value: str) -> float:
    number = _number(float, value)
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of seconds")
    return number


def _duration(value: str) -> float | None:
    from .core.spec_base import parse_duration
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser, *, connect: bool = True) -> None:
    d = Settings()
    if connect:
        p.add_argument("--connect", "-c", default=d.uri, metavar="URI", help=f"libvirt URI (default {d.uri})")
    p.add_argument("--config-dir", default=d.config_dir, metavar="DIR",
                   help=f"directory of *.json files, or one file (default {d.config_dir})")
    p.add_argument("--instance", type=_instance, default=None, metavar="NAME",
                   help="which nvirtd owns the VMs: 'default' for the service on /etc/nvirt.d, "
                        "else derived from --config-dir")
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help=f"default {d.state_dir} (the default instance), else {d.state_dir}/instances/NAME")
    p.add_argument("--images-dir", default=None, metavar="DIR",
                   help=f"overlays (default {d.images_dir}, or {d.images_dir}/nvirtd-NAME for other instances)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--host", type=_host, default=None, metavar="NAME",
                   help="this host's name in a fleet's config (domains' `host`; default: the host name)")


def _host(value: str) -> str:
    from .core.spec import HOST_PATTERN
    if len(value) > 253 or not re.fullmatch(HOST_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a host name (letters, digits, '-' and '.')")
    return value


def _peer(value: str) -> tuple[str, str]:
    name, sep, uri = value.partition("=")
    if not sep or "://" not in uri:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=URI (e.g. h2=qemu+ssh://h2/system)")
    return _host(name), uri


def _state_of(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=None, metavar="DIR", help=f"default {Settings().state_dir}")
    p.add_argument("--instance", type=_instance, default=None, metavar="NAME",
                   help="the daemon of this instance (its state dir); default: the service's")


def parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(prog="nvirtd", description="Declarative VM manager for libvirt.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    _common(run)
    run.add_argument("--virt-type", default="auto", choices=["auto", "kvm", "qemu"],
                     help="domain type when a domain does not say (auto: kvm if libvirt offers it)")
    run.add_argument("--workers", type=_positive_int, default=d.workers)
    run.add_argument("--start-concurrency", type=_count, default=d.start_concurrency, metavar="N",
                     help="guests started at once, at most (0, the default: as many as --workers); "
                          "cap it on hosts whose storage or CPUs a boot storm overloads")
    run.add_argument("--build-command", default=None,
                     help="build command of nix disks' configuration files, {path} is the file (default: "
                          "nixpkgs' image builder, system.build.images.qemu, or nixos-generate where the "
                          "nixpkgs on NIX_PATH is older than 25.05; flakes are always built with nix build)")
    run.add_argument("--build-jobs", type=_positive_int, default=d.build_jobs)
    run.add_argument("--build-timeout", type=_positive_float, default=d.build_timeout, metavar="SECONDS",
                     help="stop a nix build that runs longer, and retry it with backoff (default: %(default)gs)")
    run.add_argument("--metrics", type=_metrics_address, default=None, metavar="ADDRESS",
                     help="serve Prometheus metrics at GET /metrics on unix:PATH or HOST:PORT "
                          "(e.g. 127.0.0.1:9477); off by default")
    run.add_argument("--image-retention", type=_duration, default=d.image_retention, metavar="DURATION",
                     help="a base image no overlay uses loses its GC root after this long "
                          "(default 7d; 12h, 30m, 0, or never)")
    run.add_argument("--resync-interval", type=_positive_float, default=d.resync_interval, metavar="SECONDS")
    run.add_argument("--no-watch", action="store_true", help="do not watch the directory (reload on SIGHUP only)")
    run.add_argument("--no-trust-checks", action="store_true",
                     help="accept config files not owned by root (tests, demos; never in production)")
    run.add_argument("--peer", type=_peer, action="append", default=[], metavar="NAME=URI",
                     help="another host of the fleet and its libvirt: asked (read only) before a domain placed "
                          "here is first defined, and the destination of its live migrations (repeat for each host)")
    run.add_argument("--peer-interval", type=_positive_float, default=d.peer_interval, metavar="SECONDS",
                     help="how often a domain another host may still hold, or that may come here while its host "
                          "is drained, is asked about again (default %(default)gs)")
    run.add_argument("--once", action="store_true",
                     help="exit once everything has converged (demo, CI); prints the status table")

    check = sub.add_parser("check", help="validate a config directory or file without touching libvirt")
    check.add_argument("path", nargs="?", default=d.config_dir)
    check.add_argument("--no-trust-checks", action="store_true")

    sub.add_parser("schema", help="print the JSON Schema of a config file")
    sub.add_parser("reference", help="print the configuration reference (docs/configuration.md)")

    plan = sub.add_parser("plan", help="show what a reconcile would do now; changes nothing")
    _common(plan)
    plan.add_argument("--virt-type", default="auto", choices=["auto", "kvm", "qemu"])
    plan.add_argument("--no-trust-checks", action="store_true")
    plan.add_argument("--hosts", default=None, metavar="H1,H2=URI,...",
                      help="a fleet's plan instead: read each host's libvirt (read only) and say, per VM, what moves "
                           "next and why (the table of `status --hosts`)")

    st = sub.add_parser("status", help="show domains and networks as the daemon sees them")
    _state_of(st)
    st.add_argument("--json", action="store_true")
    st.add_argument("--no-addresses", action="store_true",
                    help="do not ask libvirt for the running guests' IP addresses (DHCP leases, guest agent)")
    st.add_argument("--hosts", default=None, metavar="H1,H2=URI,...",
                    help="a fleet's view instead: read each host's libvirt (read only; NAME alone is "
                         "qemu+ssh://NAME/system) and show where each VM runs and where the config places it")
    st.add_argument("--config-dir", default=d.config_dir, metavar="DIR", help="with --hosts: the fleet's config")
    st.add_argument("--no-trust-checks", action="store_true")

    dr = sub.add_parser("drain", help="move this host's VMs to their `hosts` alternatives (or stop them), and "
                                      "wait; --undo brings them back")
    _state_of(dr)
    dr.add_argument("host", nargs="?", default=None, metavar="HOST",
                    help="the host to drain: the one this runs on (its daemon's --host)")
    dr.add_argument("--undo", action="store_true", help="no longer drained: its VMs come back")
    dr.add_argument("--timeout", type=_positive_float, default=900.0, metavar="SECONDS",
                    help="give up waiting after this long (default %(default)gs; the drain goes on)")
    dr.add_argument("--no-wait", action="store_true", help="do not wait for the VMs to leave")

    rl = sub.add_parser("reload", help="make the running daemon re-read its config and wait for it")
    _state_of(rl)
    rl.add_argument("--timeout", type=_positive_float, default=60.0)

    gc = sub.add_parser("gc", help="drop the GC roots of base images no overlay uses (then nix-collect-garbage)")
    _common(gc, connect=False)
    gc.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    gc.add_argument("--older-than", type=_duration, default=d.image_retention, metavar="DURATION",
                    help="remove roots unused for this long: 7d (the default), 12h, 30m, 0 or never")
    gc.add_argument("--json", action="store_true")

    snap = sub.add_parser("snapshot", help="take, list, revert or delete internal snapshots of a VM")
    _common(snap)
    snap.add_argument("domain", metavar="NAME")
    what = snap.add_mutually_exclusive_group()
    what.add_argument("--name", default=None, metavar="S", help="name of the new snapshot (default nvirtd-UTCTIME)")
    what.add_argument("--list", action="store_true", help="list the VM's snapshots")
    what.add_argument("--revert", default=None, metavar="S", help="revert the VM's disks (and memory) to S")
    what.add_argument("--delete", default=None, metavar="S", help="delete snapshot S")
    snap.add_argument("--stop", action="store_true", help="with --revert: shut a running VM down first")

    backup = sub.add_parser("backup", help="copy a VM's disks into a self-contained backup, also while it runs")
    _common(backup)
    backup.add_argument("domain", metavar="NAME")
    backup.add_argument("--to", default="/var/backups/nvirtd", metavar="DIR",
                        help="backups go to DIR/NAME/UTC-TIME/ (default %(default)s)")
    restore = sub.add_parser("restore", help="restore a VM's disks from a backup (current overlays kept aside)")
    _common(restore)
    restore.add_argument("domain", metavar="NAME")
    restore.add_argument("--from", dest="source", required=True, metavar="DIR", help="a backup folder (DIR/NAME/UTC-TIME)")
    restore.add_argument("--stop", action="store_true", help="shut a running VM down first")

    purge = sub.add_parser("purge", help="delete the overlays of a domain that is no longer declared")
    _common(purge)
    purge.add_argument("name")
    purge.add_argument("--yes", action="store_true", help="really delete (otherwise only list, or ask on a terminal)")
    return p


_HANDLERS = {"gc": (".gc_command", "cmd_gc"), "snapshot": (".snapshot_command", "cmd_snapshot"),
             "backup": (".backup_command", "cmd_backup"), "restore": (".backup_command", "cmd_restore"),
             "run": (".commands", "cmd_run"), "check": (".commands", "cmd_check"),
             "schema": (".commands", "cmd_schema"), "plan": (".commands", "cmd_plan"),
             "status": (".commands", "cmd_status"), "reload": (".commands", "cmd_reload"),
             "drain": (".drain_command", "cmd_drain"), "purge": (".purge", "cmd_purge"),
             "reference": (".commands", "cmd_reference")}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        from . import logs
        logs.configure(getattr(args, "log_level", "warning"), cache=True, background=args.command == "run")
        # only the command's own module is imported: `nvirtd run` starts without the others
        module, name = _HANDLERS[args.command]
        return getattr(importlib.import_module(module, __package__), name)(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`nvirtd status | head`): nothing left to say to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback on request
        if os.environ.get("NVIRTD_DEBUG"):
            raise
        from .errors import NvirtdError
        what = "" if isinstance(exc, (NvirtdError, OSError)) else "internal error: "
        print(f"nvirtd: {what}{exc}" + ("" if what == "" else " (NVIRTD_DEBUG=1 shows the traceback)"),
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
