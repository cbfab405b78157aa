"""nvirtd's command line: run | check | plan | status | reload | schema | purge."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import time

from . import status as status_mod
from .settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _common(p: argparse.ArgumentParser, *, connect: bool = True, config: bool = True, state: bool = True) -> None:
    d = Settings()
    if connect:
        p.add_argument("--connect", "-c", default=d.uri, metavar="URI", help=f"libvirt URI (default {d.uri})")
    if config:
        p.add_argument("--config-dir", default=d.config_dir, metavar="DIR",
                       help=f"directory of *.json files, or one file (default {d.config_dir})")
    if state:
        p.add_argument("--state-dir", default=d.state_dir, metavar="DIR", help=f"default {d.state_dir}")
    p.add_argument("--images-dir", default=d.images_dir, metavar="DIR", help=f"overlays (default {d.images_dir})")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _settings(args: argparse.Namespace) -> Settings:
    d = Settings()
    return Settings(
        uri=getattr(args, "connect", d.uri), config_dir=getattr(args, "config_dir", d.config_dir),
        state_dir=getattr(args, "state_dir", d.state_dir), images_dir=args.images_dir,
        virt_type=getattr(args, "virt_type", d.virt_type), workers=getattr(args, "workers", d.workers),
        build_command=tuple(shlex.split(args.build_command)) if getattr(args, "build_command", None) else d.build_command,
        build_jobs=getattr(args, "build_jobs", d.build_jobs),
        resync_interval=getattr(args, "resync_interval", d.resync_interval),
        watch=not getattr(args, "no_watch", False),
        trust_checks=not getattr(args, "no_trust_checks", False),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nvirtd", description="Declarative VM manager for libvirt.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    _common(run)
    run.add_argument("--virt-type", default="auto", choices=["auto", "kvm", "qemu"],
                     help="domain type when a domain does not say (auto: kvm if libvirt offers it)")
    run.add_argument("--workers", type=int, default=Settings().workers)
    run.add_argument("--build-command", default=None,
                     help="image build command, {path} is the NixOS configuration (default: %s)"
                          % shlex.join(Settings().build_command))
    run.add_argument("--build-jobs", type=int, default=Settings().build_jobs)
    run.add_argument("--resync-interval", type=float, default=Settings().resync_interval, metavar="SECONDS")
    run.add_argument("--no-watch", action="store_true", help="do not watch the directory (reload on SIGHUP only)")
    run.add_argument("--no-trust-checks", action="store_true",
                     help="accept config files not owned by root (tests, demos; never in production)")
    run.add_argument("--once", action="store_true",
                     help="exit once everything has converged (demo, CI); prints the status table")

    check = sub.add_parser("check", help="validate a config directory or file without touching libvirt")
    check.add_argument("path", nargs="?", default=Settings().config_dir)
    check.add_argument("--no-trust-checks", action="store_true")

    sub.add_parser("schema", help="print the JSON Schema of a config file")
    sub.add_parser("reference", help="print the configuration reference (docs/configuration.md)")

    plan = sub.add_parser("plan", help="show what a reconcile would do now; changes nothing")
    _common(plan)
    plan.add_argument("--virt-type", default="auto", choices=["auto", "kvm", "qemu"])
    plan.add_argument("--no-trust-checks", action="store_true")

    st = sub.add_parser("status", help="show domains and networks as the daemon sees them")
    st.add_argument("--state-dir", default=Settings().state_dir)
    st.add_argument("--json", action="store_true")

    rl = sub.add_parser("reload", help="make the running daemon re-read its config and wait for it")
    rl.add_argument("--state-dir", default=Settings().state_dir)
    rl.add_argument("--timeout", type=float, default=60.0)

    purge = sub.add_parser("purge", help="delete the overlays of a domain that is no longer declared")
    _common(purge)
    purge.add_argument("name")
    purge.add_argument("--yes", action="store_true", help="really delete (otherwise only list)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from . import logs
    logs.configure(getattr(args, "log_level", "warning"))
    handler = {"run": cmd_run, "check": cmd_check, "schema": cmd_schema, "plan": cmd_plan,
               "status": cmd_status, "reload": cmd_reload, "purge": cmd_purge,
               "reference": cmd_reference}[args.command]
    return handler(args)


def cmd_run(args: argparse.Namespace) -> int:
    from .app import Daemon

    async def go() -> int:
        daemon = Daemon(_settings(args))
        if not args.once:
            await daemon.run()
            return EXIT_OK
        task = asyncio.create_task(daemon.run())
        await daemon.ready.wait()
        while True:
            await asyncio.sleep(0.1)
            if daemon.queue.idle(horizon=2.0) and daemon.images.building == 0:
                await asyncio.sleep(0.3)
                if daemon.queue.idle(horizon=2.0) and daemon.images.building == 0:
                    break
        daemon.stop()
        await task
        print(status_mod.render_table(status_mod.load(args.state_dir)))
        failed = any(e.phase == "error" for e in daemon.status.entries.values()) or daemon.status.config_errors
        return EXIT_ERROR if failed else EXIT_OK

    return asyncio.run(go())


def _load_for_check(path: str, trust: bool):
    from .configfiles import ConfigReader
    from .core.config import merge
    from .core.desired import render_all
    from .core.domain_xml import RenderContext
    from .core.spec import VirtType

    files, problem = ConfigReader(path, trust_checks=trust).read()
    if problem is not None:
        return None, [problem.message], files
    state = merge(files, {})
    rendered = render_all(state, RenderContext(VirtType.kvm, Settings().images_dir, Settings().state_dir))
    return rendered, [str(e) for e in rendered.all_errors], files


def cmd_check(args: argparse.Namespace) -> int:
    rendered, errors, files = _load_for_check(args.path, not args.no_trust_checks)
    for err in errors:
        print(err, file=sys.stderr)
    if rendered is not None and not errors:
        print(f"{args.path}: OK ({len(files)} files, {len(rendered.domains)} domains, "
              f"{len(rendered.networks)} networks)")
    return EXIT_ERROR if errors else EXIT_OK


def cmd_schema(_args: argparse.Namespace) -> int:
    from .core.spec import ConfigFile
    schema = ConfigFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nvirtd configuration file"
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def cmd_reference(_args: argparse.Namespace) -> int:
    from .reference import markdown
    sys.stdout.write(markdown())
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from .adapters.hypervisor import Hypervisor
    from .adapters.images import Images
    from .core.desired import render_all
    from .core.domain_xml import RenderContext
    from .core.config import merge
    from .configfiles import ConfigReader
    from .core.plan import Act
    from .core.spec import VirtType
    from .reconciler import Reconciler
    from .status import StatusStore

    settings = _settings(args)

    async def go() -> int:
        files, problem = ConfigReader(settings.config_dir, trust_checks=settings.trust_checks).read()
        if problem is not None:
            print(problem.message, file=sys.stderr)
            return EXIT_ERROR
        hv = Hypervisor(settings.uri)
        await hv.connect()
        try:
            virt = VirtType(args.virt_type)
            if virt == VirtType.auto:
                virt = await hv.default_virt_type()
            rendered = render_all(merge(files, {}), RenderContext(virt, settings.images_dir, settings.state_dir))
            status = StatusStore("/nonexistent")
            rec = Reconciler(hv, Images(state_dir=settings.state_dir), status, images_dir=settings.images_dir,
                             dry_run=True)
            rec.desired = rendered
            keys = [("network", n) for n in sorted(set(rendered.networks) | set(await hv.list_networks()))]
            keys += [("domain", n) for n in sorted(set(rendered.domains) | set(await hv.list_domains()))]
            changes = 0
            for key in keys:
                plan = await rec.plan_and_act(key)
                # evaluating an image whose overlay exists is a check, not a change
                acts = [a for a in plan.actions if a.kind != Act.build_image or plan.phase == "building"]
                if plan.phase == "removed" and not acts:
                    continue
                changes += len(acts)
                conds = f" [{', '.join(sorted(plan.conditions))}]" if plan.conditions else ""
                what = ", ".join(str(a) for a in acts) or "nothing to do"
                print(f"{key[0]} {key[1]}: {what}{conds}" + (f"  ({plan.message})" if plan.message else ""))
            for err in rendered.all_errors:
                print(f"error: {err}", file=sys.stderr)
            return EXIT_CHANGES if changes else (EXIT_ERROR if rendered.all_errors else EXIT_OK)
        finally:
            await hv.close()
            hv.shutdown_pool()

    return asyncio.run(go())


def _load_status(state_dir: str) -> dict | None:
    try:
        return status_mod.load(state_dir)
    except FileNotFoundError:
        print(f"no status in {state_dir}: is nvirtd running?", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    data = _load_status(args.state_dir)
    if data is None:
        return EXIT_ERROR
    alive = _alive(data.get("daemon", {}).get("pid"))
    if args.json:
        print(json.dumps({**data, "daemon": {**data.get("daemon", {}), "running": alive}}, indent=2))
    else:
        print(status_mod.render_table(data) + ("" if alive else "\n(nvirtd is not running: this is its last status)"))
    return EXIT_OK


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cmd_reload(args: argparse.Namespace) -> int:
    """Synchronous reload for ExecReload= on systemd < 253: signal, then wait for the answer."""
    data = _load_status(args.state_dir)
    if data is None:
        return EXIT_ERROR
    pid = data.get("daemon", {}).get("pid")
    if not _alive(pid):
        print("nvirtd is not running", file=sys.stderr)
        return EXIT_ERROR
    sent = time.time()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            reload = status_mod.load(args.state_dir).get("reload", {})
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if (reload.get("started_at") or 0) >= sent - 0.001:
            for err in reload.get("errors", []):
                print(err, file=sys.stderr)
            return EXIT_ERROR if reload.get("errors") else EXIT_OK
    print(f"nvirtd did not finish the reload within {args.timeout:g}s", file=sys.stderr)
    return EXIT_ERROR


def cmd_purge(args: argparse.Namespace) -> int:
    from .adapters.hypervisor import Hypervisor
    from .adapters.images import Images

    rendered, _errors, _files = _load_for_check(args.config_dir, True)
    if rendered is None or args.name in rendered.state.domains:
        print(f"refusing: {args.name} is declared in {args.config_dir} (remove it there first)"
              if rendered is not None else "refusing: the config directory cannot be read", file=sys.stderr)
        return EXIT_ERROR

    async def go() -> int:
        hv = Hypervisor(args.connect)
        await hv.connect()
        try:
            if await hv.observe_domain(args.name) is not None:
                print(f"refusing: domain {args.name} is still defined in libvirt; wait until nvirtd has "
                      "removed it", file=sys.stderr)
                return EXIT_ERROR
        finally:
            await hv.close()
            hv.shutdown_pool()
        images = Images(state_dir=args.state_dir)
        overlays = [o for o, e in images.registry().items() if e.get("domain") == args.name]
        if not overlays:
            print(f"nothing recorded for {args.name}")
            return EXIT_OK
        if not args.yes:
            print("would delete (run again with --yes):\n  " + "\n  ".join(overlays))
            return EXIT_OK
        for path in await images.purge(args.name):
            print(f"deleted {path}")
        for root in await images.prune_roots(set()):
            print(f"dropped GC root {root}")
        return EXIT_OK

    return asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
