"""The subcommands (see __main__ for the parser): run, check, plan, status, reload, schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time

from . import status as status_mod
from .cliargs import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, settings_from, state_dir_of
from .settings import Settings


def cmd_run(args: argparse.Namespace) -> int:
    from .app import Daemon, calm_gc_until_ready
    from .errors import StartupError
    from .runtime.statelock import StateDirLocked

    calm_gc_until_ready()
    settings = settings_from(args)
    daemon = Daemon(settings)

    async def converge_once(task: asyncio.Task[None]) -> None:
        ready = asyncio.ensure_future(daemon.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        quiet = 0
        while not task.done() and quiet < 2:
            await asyncio.sleep(0.15)
            idle = daemon.queue.idle(horizon=2.0) and daemon.images.building == 0
            quiet = quiet + 1 if idle else 0
        daemon.stop()

    async def go() -> None:
        task = asyncio.create_task(daemon.run())
        if args.once:
            await converge_once(task)
        await task

    try:
        asyncio.run(go())
    except (StateDirLocked, StartupError) as exc:
        print(f"nvirtd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    code = EXIT_OK
    if daemon.fatal is not None:
        print(f"nvirtd: stopped after an internal error: {daemon.fatal}", file=sys.stderr)
        code = EXIT_ERROR
    elif args.once:
        print(status_mod.render_table(daemon.status.to_json()))
        failed = any(e.phase == "error" for e in daemon.status.entries.values()) or daemon.status.config_errors
        code = EXIT_ERROR if failed else EXIT_OK
    return _exit(code)


def _exit(code: int) -> int:
    """A libvirt call stuck in a worker thread (a hung libvirtd) must not keep the process
    alive after it is done: the interpreter would wait for that thread forever."""
    from . import logs
    logs.flush()  # the writer thread's lines (runtime/logwriter.py), before the caller reads them
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def load_config(path: str, trust: bool):
    """(rendered or None, error lines, files, skipped) for check, plan and purge."""
    from .configfiles import ConfigReader
    from .core.config import merge
    from .core.desired import render_all
    from .core.domain_xml import RenderContext
    from .core.spec import VirtType

    reader = ConfigReader(path, trust_checks=trust)
    files, problem = reader.read()
    if problem is not None:
        return None, [problem.message], files, reader.skipped
    d = Settings()
    rendered = render_all(merge(files, {}), RenderContext(VirtType.kvm, d.images_dir, d.state_dir))
    return rendered, [str(e) for e in rendered.all_errors], files, reader.skipped


def cmd_check(args: argparse.Namespace) -> int:
    rendered, errors, files, skipped = load_config(args.path, not args.no_trust_checks)
    for entry in skipped:
        print(f"warning: {entry}", file=sys.stderr)
    for err in errors:
        print(err, file=sys.stderr)
    if rendered is not None and not errors:
        extra = f", {len(skipped)} skipped" if skipped else ""
        print(f"{args.path}: OK ({len(files)} files{extra}, {len(rendered.domains)} domains, "
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
    """What the daemon would do now: the same observe and plan as a reconcile pass, and no
    execute (nothing is changed, not even a GC root)."""
    from .adapters.hypervisor import Hypervisor
    from .adapters.images import Images
    from .configstore import ConfigStore
    from .core.domain_xml import RenderContext
    from .core.keys import Key, Kind
    from .core.plan import Act, Condition, Phase
    from .core.spec import VirtType
    from .domain_kind import DomainKind
    from .network_kind import NetworkKind
    from .pipeline import Pipeline
    from .runtime.expectations import Expectations
    from .status import StatusStore

    if getattr(args, "hosts", None):  # a fleet's: what moves next, from every host's libvirt
        from .fleet_status import cmd_fleet_status
        return cmd_fleet_status(args)
    settings = settings_from(args)

    async def go() -> int:
        status = StatusStore("/nonexistent")
        config = ConfigStore(settings, status)
        files, problem = config.reader.read()
        if problem is not None:
            print(problem.message, file=sys.stderr)
            return EXIT_ERROR
        hv = Hypervisor(settings.uri)
        await hv.connect()
        try:
            virt = VirtType(args.virt_type)
            if virt == VirtType.auto:
                virt = await hv.default_virt_type()
            config.ctx = RenderContext(virt, settings.images_dir, settings.state_dir, instance=settings.instance)
            config.render(files)
            rendered = config.desired
            assert rendered is not None
            images = Images(state_dir=settings.state_dir)
            kinds = [DomainKind(hv, images, Expectations(), images_dir=settings.images_dir,
                                state_dir=settings.state_dir, declared_networks=lambda: rendered.networks,
                                start_order=config.start_order, instance=settings.instance,
                                peers=settings.peers, placed_elsewhere=config.placed_elsewhere,
                                host=settings.host),
                     NetworkKind(hv)]
            pipeline = Pipeline(kinds, config, status, wake=lambda key: None, connection_lost=lambda why: None)
            keys = [Key(Kind.network, n) for n in sorted(set(rendered.networks) | set(await hv.list_networks()))]
            keys += [Key(Kind.domain, n) for n in sorted(set(rendered.domains) | set(await hv.list_domains()))]
            changes = 0
            for key in keys:
                _wanted, _obs, plan = await pipeline.look(key)
                # evaluating an image whose overlay exists is a check, not a change
                acts = [a for a in plan.actions if a.kind != Act.build_image or plan.phase == Phase.building]
                if plan.phase == Phase.removed and not acts and Condition.foreign not in plan.conditions:
                    continue
                changes += len(acts)
                conds = f" [{', '.join(sorted(plan.conditions))}]" if plan.conditions else ""
                what = ", ".join(str(a) for a in acts) or "nothing to do"
                print(f"{key.kind.value} {key.name}: {what}{conds}" + (f"  ({plan.message})" if plan.message else ""))
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
        print(f"nvirtd: no status in {state_dir}: is nvirtd running?", file=sys.stderr)
    except ValueError as exc:
        print(f"nvirtd: {state_dir}/{status_mod.STATUS_FILE} is not readable JSON: {exc}", file=sys.stderr)
    return None


def cmd_status(args: argparse.Namespace) -> int:
    if args.hosts is not None:
        from .fleet_status import cmd_fleet_status
        return cmd_fleet_status(args)
    data = _load_status(state_dir_of(args))
    if data is None:
        return EXIT_ERROR
    alive = _alive(data.get("daemon", {}).get("pid"))
    if not args.no_addresses:
        _add_addresses(data)
    if args.json:
        print(json.dumps({**data, "daemon": {**data.get("daemon", {}), "running": alive}}, indent=2))
    else:
        print(status_mod.render_table(data) + ("" if alive else "\n(nvirtd is not running: this is its last status)"))
    return EXIT_OK


def _add_addresses(data: dict) -> None:
    """Each running domain's IP addresses, by NIC name, read from libvirt now (they change
    without events, so the daemon never stores them); a libvirt that does not answer is a
    warning, not a failure."""
    uri = (data.get("libvirt") or {}).get("uri")
    running = [e for e in data.get("domains", []) if e.get("phase") == "running"]
    if not uri or not running:
        return
    from .adapters.hypervisor_addresses import read_guest_addresses
    try:
        found = read_guest_addresses(uri, [e["name"] for e in running])
    except Exception as exc:  # noqa: BLE001 - libvirt gone, hung or refusing: the rest of the status stands
        why = "did not answer within 5 s" if isinstance(exc, TimeoutError) else str(exc).strip()
        data.setdefault("warnings", []).append(f"no guest addresses: libvirt at {uri} {why}")
        return
    for entry in running:
        by_mac = found.get(entry["name"])
        if by_mac is None:
            continue
        names = {mac.lower(): nic for nic, mac in (entry.get("interfaces") or {}).items()}
        entry["addresses"] = {names.get(mac, mac): addrs for mac, addrs in sorted(by_mac.items())}


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


def running_daemon(state_dir: str) -> tuple[dict, int] | None:
    """The running daemon's status and pid, or None (said on stderr)."""
    data = _load_status(state_dir)
    if data is None:
        return None
    pid = data.get("daemon", {}).get("pid")
    if not _alive(pid):
        print("nvirtd: nvirtd is not running", file=sys.stderr)
        return None
    return data, pid


def cmd_reload(args: argparse.Namespace) -> int:
    """Synchronous reload for ExecReload= on systemd < 253: signal, then wait until the
    daemon has read the config and reconciled what changed once."""
    state_dir = state_dir_of(args)
    running = running_daemon(state_dir)
    if running is None:
        return EXIT_ERROR
    pid = running[1]
    sent = time.time()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            reload = status_mod.load(state_dir).get("reload", {})
        except (OSError, ValueError):
            continue
        if (reload.get("started_at") or 0) >= sent - 0.001 and reload.get("finished_at"):
            for err in reload.get("errors", []):
                print(err, file=sys.stderr)
            return EXIT_ERROR if reload.get("errors") else EXIT_OK
    print(f"nvirtd: the daemon did not finish the reload within {args.timeout:g}s (see nvirtd status)",
          file=sys.stderr)
    return EXIT_ERROR
