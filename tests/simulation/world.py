"""One schedule, run: the real daemon on the fake hypervisor, in virtual time.

The daemon is the real one (config reader, merge, queue, workers, pipeline,
executor, status, connection handling); what it talks to is the in-memory
hypervisor (held to libvirt by tests/adapters/test_hypervisor_contract.py) and a
real config directory in a temporary folder. Each daemon "process" gets its own
event loop on the shared virtual clock: SIGTERM stops it properly, kill -9 drops
the loop with whatever it was doing (its lock goes, as the kernel would release it).

Invariants, checked while it runs (the hypervisor checks each call) and at the end:
 1. no mutating call on a domain that is foreign or another instance's;
 3. once faults stop, the domains converge to the final config;
 4. then a reload and a restart make 0 mutating calls;
 5. a running guest is stopped only when the config it was read from asks;
 6. no exception escapes a task; SIGTERM ends the daemon within 10 virtual seconds;
 7. a running guest's live record is true (tests/simulation/live_record.py).
(2, overlays and GC roots, needs nix disks, which this simulation does not model yet.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from daemon import app, declared, status
from daemon.adapters import images, proc, seed_iso
from daemon.adapters.fake_hypervisor import FakeHypervisor
from daemon.adapters.hypervisor_protocol import DefineDomain, Destroy, DomainOp, Shutdown
from daemon.app import Daemon
from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.observed import Power
from daemon.core.spec import Domain, VirtType
from daemon.settings import Settings

from .fake_tools import BUILD, FakeTools
from .live_record import live_record_lie
from .overlays import OverlayWatch, declared_specs, recreates
from .schedule import NAMES, Step, file_text, variant
from .steps import INSTANCE, EventFaults, FaultSteps
from .vloop import Deadlock, Livelock, VirtualClock, VirtualLoop


class Violation(AssertionError):
    pass


async def _at_once(fn: Any, *args: Any) -> Any:
    """A blocking call made in the loop: a real thread would finish in real time, outside the
    virtual clock (and after a killed daemon's loop is gone)."""
    return fn(*args)


class SimHypervisor(EventFaults, FakeHypervisor):
    """The fake, checking every call the daemon makes against invariants 1 and 5."""

    def __init__(self, world: "World") -> None:
        super().__init__()
        self.world = world

    async def apply(self, name: str, ops: list[DomainOp]) -> None:
        for op in ops:
            kind = op.counter
            if isinstance(op, DefineDomain):
                existing = self._by_name(name)
                if existing is not None:
                    self._check_ours(existing, kind)
            elif self._looked.get(name) in self.domains:
                dom = self.domains[self._looked[name]]
                self._check_ours(dom, kind)
                if isinstance(op, (Shutdown, Destroy)) and dom.power.active:
                    self.world.check_stop_allowed(name, kind)
        try:
            await super().apply(name, ops)
        finally:
            lie = live_record_lie(self._by_name(name))
            if lie is not None:
                self.world.violate(f"invariant 7: running {name!r}: {lie}")

    def _check_ours(self, dom: Any, kind: str) -> None:
        owner = dom.config_owner if dom.config is not None else dom.live_owner
        if owner is None or owner.owned_by != INSTANCE:
            who = "a foreign domain" if owner is None else f"instance {owner.owned_by!r}'s domain"
            self.world.violate(f"invariant 1: {kind} on {who} {dom.name!r}")


def _stop_asked(name: str, texts: dict[str, str]) -> bool:
    if not any(_may_declare(name, t) for t in texts.values()):
        return True
    return any(spec.get("state") == "stopped" or spec.get("restartOnChange") or recreates(spec)
               for spec in declared_specs(name, texts))


def _may_declare(name: str, text: str) -> bool:
    """A file that parses declares it as a key of "domains" (a startAfter naming it does not);
    a broken one may, when its text names it at all (as nvirtd reads broken files)."""
    try:
        domains = json.loads(text).get("domains")
    except (ValueError, AttributeError):
        return f'"{name}"' in text
    return isinstance(domains, dict) and name in domains if domains is not None else False


class World(FaultSteps):
    def __init__(self, steps: list[Step], *, trace: bool = False) -> None:
        self.steps = steps
        self.trace: list[str] = []
        self.tracing = trace
        self.vclock = VirtualClock()
        self.hv = SimHypervisor(self)
        self.root = Path(tempfile.mkdtemp(prefix="nvirtd-sim-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self.config = self.root / "config"
        self.config.mkdir()
        self.settings = Settings(uri="fake:///", config_dir=str(self.config), state_dir=str(self.root / "state"),
                                 images_dir=str(self.root / "images"), workers=4, watch=False, trust_checks=False,
                                 resync_interval=3600.0, virt_type=VirtType.kvm, build_command=(BUILD, "{path}"),
                                 build_timeout=100.0, image_retention=0.0, gc_interval=60.0)
        self.nix_dir = self.root / "nix"
        self.nix_dir.mkdir()
        (self.nix_dir / "vm.nix").write_text("{ ... }: { services.sshd.enable = true; }\n")
        self.store = self.root / "store"
        self.store.mkdir()
        self.tools = FakeTools(self.store, self.root / "state" / "gcroots")
        self.tools.write_image(self.nix_dir / "base.qcow2", size=2**30)  # an image disk's base (a cloud image)
        self.hv.image_sizes = self.tools.sizes  # a live resize changes the file qemu-img reads
        self.tools.in_use = lambda path: any(path in d.open_disks for d in self.hv.domains.values())
        self.overlays = OverlayWatch(self.root / "images", self.violate)
        self.disk_full_until = -1.0
        self.read_texts: dict[str, str] = {}  # the config as the daemon last read it
        self.prev_texts: dict[str, str] = {}  # and the one before (passes begun before the last reload)
        self.violation: str | None = None  # the first one seen inside a call
        self.last_good: dict[str, str] = {}  # per file, its last content that parsed
        self.daemon: Daemon | None = None
        self.task: asyncio.Task | None = None
        self.loop: VirtualLoop | None = None

    # ---- running ------------------------------------------------------------------------
    def run(self) -> None:
        self.vclock.install()
        # release_memory (a full gc.collect at READY) costs a real process a few ms once; here,
        # in a process that holds every earlier schedule's garbage, it was a third of the run
        patches = [(proc, "run", self.tools.run), (app, "release_memory", lambda: None),
                   (seed_iso, "in_thread", _at_once)] + [
            (module, "atomic_write", self.full_disk_write(module.atomic_write)) for module in (status, declared, images)]
        saved = [(m, n, getattr(m, n)) for m, n, _ in patches]
        store_env = os.environ.get("NIX_STORE_DIR")
        os.environ["NIX_STORE_DIR"] = str(self.store)
        try:
            for module, name, value in patches:
                setattr(module, name, value)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a killed daemon's loop is dropped with its tasks
                self._run()
        finally:
            for module, name, value in saved:
                setattr(module, name, value)
            if store_env is None:
                os.environ.pop("NIX_STORE_DIR", None)
            else:
                os.environ["NIX_STORE_DIR"] = store_env
            self.vclock.uninstall()
            if self.loop is not None and not self.loop.is_closed():
                self.loop.close()
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self) -> None:
        self._new_loop()
        self._in_loop(self._start())
        for step in self.steps:
            self.note(str(step))
            if step.kind == "kill":  # kill -9: the process and its loop are gone mid-work
                self._kill()
                self._in_loop(self._start())
                self._in_loop(asyncio.sleep(step.wait))
            else:
                self._in_loop(self._step(step))
            self._check_alive()

    def _new_loop(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.close()
        self.loop = VirtualLoop(self.vclock)
        asyncio.set_event_loop(self.loop)

    def _in_loop(self, coro: Any) -> None:
        assert self.loop is not None
        self.loop.run_until_complete(coro)

    def note(self, text: str) -> None:
        self.trace.append(f"[{self.vclock.now:9.2f}] {text}")

    async def _start(self) -> None:
        self.last_good = {}  # a new process knows no file's last good content (it is kept in memory)
        self.daemon = Daemon(self.settings, hypervisor=self.hv)
        original_read, original_render = self.daemon.config.reader.read, self.daemon.config.render
        pending: dict[str, dict[str, str]] = {}

        def read() -> Any:  # remember what the daemon saw, for invariants 2 and 5
            pending["now"] = {p.name: p.read_text() for p in self.config.glob("*.json")}
            return original_read()

        def render(files: Any, **kwargs: Any) -> Any:
            # the daemon acts on what it read once it has rendered it, not before
            now = pending.pop("now", {})
            result = original_render(files, **kwargs)
            # a file held for a rule across files (a startAfter naming no declared domain)
            # parses but is not good: it keeps the content it had before, if any
            held = result.rendered.state.broken_files if result.rendered is not None else set()
            for name, text in now.items():
                with contextlib.suppress(ValueError):
                    json.loads(text)
                    if name not in held:
                        self.last_good[name] = text
            self.last_good = {n: t for n, t in self.last_good.items() if n in now}
            # a broken file counts with its last good content and with what its text names
            self.prev_texts = self.read_texts
            self.read_texts = {**{f"{n}#raw": t for n, t in now.items()}, **self.last_good}
            return result
        self.daemon.config.reader.read = read  # type: ignore[method-assign]
        self.daemon.config.render = render  # type: ignore[method-assign]
        self.task = asyncio.ensure_future(self.daemon.run())
        await asyncio.sleep(0)

    def _check_alive(self) -> None:
        self.overlays.check(self.read_texts, self.prev_texts)
        if self.violation is not None:
            raise Violation(self.violation)
        if self.daemon is not None and self.daemon.fatal is not None:
            raise Violation(f"invariant 6: a task crashed: {self.daemon.fatal}")
        if self.task is not None and self.task.done() and not self.task.cancelled():
            exc = self.task.exception()
            if exc is not None:
                raise Violation(f"invariant 6: the daemon ended with {exc!r}") from exc
            raise Violation("invariant 6: the daemon stopped on its own")

    async def _terminate(self) -> None:
        assert self.daemon is not None and self.task is not None
        self.daemon.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 10.0)
        except TimeoutError:
            raise Violation("invariant 6: SIGTERM did not end the daemon within 10 s") from None
        if self.daemon.fatal is not None:
            raise Violation(f"invariant 6: a task crashed: {self.daemon.fatal}")

    def _kill(self) -> None:
        assert self.daemon is not None
        self.daemon.lock.release()  # the kernel's job when a process dies
        self.task = None
        self.hv.drop_connection()
        self._new_loop()

    # ---- steps ----------------------------------------------------------------------------
    async def _step(self, step: Step) -> None:
        if step.kind == "restart":
            await self._terminate()
            await self._start()
        elif step.kind == "final":
            await self._final(*step.args)
            return
        else:
            getattr(self, f"_do_{step.kind}")(*step.args)
        await asyncio.sleep(step.wait)
        self._check_alive()

    # ---- invariant 5 ------------------------------------------------------------------------
    def check_stop_allowed(self, name: str, op: str) -> None:
        """A running guest may be stopped when the config it was read from asks: its
        name is in no file at all, or a valid file declares it stopped, restartOnChange or
        to be recreated on a new image. A pass reads the config once, when it begins: one
        that began before the last reload acts on the config before it."""
        if not any(_stop_asked(name, texts) for texts in (self.read_texts, self.prev_texts)):
            self.violate(f"invariant 5: {op} of running {name!r}, which its config keeps running")

    def violate(self, what: str) -> None:
        """Record it (the daemon would swallow an exception raised inside its call) and fail the call."""
        self.note(f"VIOLATION {what}")
        if self.violation is None:
            self.violation = what
        raise Violation(what)

    # ---- the quiet end: invariants 3 and 4 ---------------------------------------------------
    async def _final(self, domains: tuple) -> None:
        if self.task is None:  # killed last: the next process starts
            await self._start()
        self.hv.faults.clear()
        self.hv.libvirtd_up = True
        self.hv.event_mode = "normal"
        self.tools.build_mode, self.tools.create_fails, self.disk_full_until = "ok", False, -1.0
        for path in self.config.glob("*.json"):
            path.unlink()
        taken = {d.name for d in self.hv.domains.values() if not self._ours(d)}
        self._write("final.json", file_text(tuple(domains), str(self.nix_dir)))
        self._do_reload(True)
        for _ in range(20):  # 1,200 s: backoffs (5 min at most), shutdown timeouts, reconnects
            await asyncio.sleep(60)
            self._check_alive()
        self._check_converged(dict(domains), taken)
        before = self.hv.mutation_count
        self._do_reload(True)
        await asyncio.sleep(60)
        if self.hv.mutation_count != before:
            raise Violation(f"invariant 4: an unchanged reload made {self.hv.mutation_count - before} mutating calls")
        await self._terminate()
        await self._start()
        await asyncio.sleep(60)
        if self.hv.mutation_count != before:
            raise Violation(f"invariant 4: a restart with an unchanged config made "
                            f"{self.hv.mutation_count - before} mutating calls: {dict(self.hv.mutations)}")
        await self._terminate()
        self.task = None

    def _ours(self, dom: Any) -> bool:
        owner = dom.config_owner if dom.config is not None else dom.live_owner
        return owner is not None and owner.owned_by == INSTANCE

    def _check_converged(self, wanted: dict[str, int], taken: set[str]) -> None:
        ctx = RenderContext(VirtType.kvm, self.settings.images_dir, self.settings.state_dir, instance=INSTANCE)
        for name in NAMES:
            dom = self.hv._by_name(name)
            if name in taken:
                if dom is None or self._ours(dom):
                    raise Violation(f"invariant 1: {name!r}, held by someone else, was taken over or removed")
                continue
            if name not in wanted:
                if dom is not None:
                    raise Violation(f"invariant 3: {name!r} is not declared but still defined ({dom.power})")
                continue
            spec = variant(wanted[name], str(self.nix_dir))
            expected = render_domain(name, Domain.model_validate(spec), ctx, source_file="final.json")
            if self._shrink_refused(name, expected):
                continue
            running = spec.get("state") != "stopped"
            want_power = Power.running if running else Power.shutoff
            autostart = running and not spec.get("startAfter")  # nvirtd, not libvirt, starts those
            powers = {want_power}
            if spec.get("startAfter") and not self._runs_ours(spec["startAfter"][0], taken):
                # not started while what it starts after does not run; one started before keeps running
                powers = {Power.shutoff, Power.running}
            if (dom is None or not self._ours(dom) or dom.config is None
                    or dom.config_owner.spec_hash != expected.spec_hash or dom.power not in powers
                    or dom.autostart != autostart):
                state = None if dom is None else (dom.power, dom.autostart,
                                                   dom.config_owner.spec_hash if dom.config_owner else None)
                raise Violation(f"invariant 3: {name!r} did not converge: {state}, wanted {want_power}, "
                                f"{expected.spec_hash}")


    def _runs_ours(self, name: str, taken: set[str]) -> bool:
        dom = self.hv._by_name(name)
        return name not in taken and dom is not None and self._ours(dom) and dom.power == Power.running

    def _shrink_refused(self, name: str, expected: Any) -> bool:
        """An overlay kept from before (a removed domain's stays) is larger than the size
        declared now: nvirtd must refuse, say so, and change nothing (so not converge)."""
        overlay = Path(self.settings.images_dir) / f"{name}-root.qcow2"
        disk = expected.spec.disks.get("root")
        wanted = disk.nix.size_bytes if disk is not None and disk.nix else None
        if wanted is None or not overlay.exists() or self.tools.read(str(overlay))["virtual-size"] <= wanted:
            return False
        entry = self.daemon.status.entries.get(("domain", name)) if self.daemon else None
        if entry is None or entry.phase != "error" or "nix.size" not in (entry.error or ""):
            raise Violation(f"invariant 3: {name!r}: nix.size is below its overlay's size and the status does not "
                            f"say so ({entry.phase if entry else None}: {entry.error if entry else None})")
        return True


def run_schedule(steps: list[Step]) -> str | None:
    """None when every invariant held; else the violation, with the trace."""
    world = World(steps)
    try:
        world.run()
    except Violation as exc:
        return f"{exc}\n" + "\n".join(world.trace[-12:])
    except (Deadlock, Livelock) as exc:
        return f"invariant 6: the daemon hangs: {exc}\n" + "\n".join(world.trace[-12:])
    return None

