"""The composition root: connect, wire sources -> queue -> workers, signals, sd_notify.

Everything long-lived runs in one asyncio.TaskGroup, each task supervised: an
exception that escapes one (a bug) is logged in one line, stops the daemon and
makes `nvirtd run` exit non-zero, so systemd restarts it. Shutdown (SIGTERM, or a
crashed task): STOPPING=1, stop the sources, let in-flight reconciles finish for
at most `drain_timeout`, cancel the rest; whatever libvirt does meanwhile (a hung
libvirtd), the daemon is gone within seconds. VMs are never stopped because
nvirtd stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import structlog

from .runtime import clock
from .adapters.hypervisor import Hypervisor
from .adapters.hypervisor_protocol import HypervisorLike
from .adapters.images import Images
from .configfiles import ConfigReader, may_declare
from .connection import LibvirtLink
from .core.config import merge
from .core.desired import Rendered, changed_keys, render_all
from .core.domain_xml import RenderContext
from .core.spec import ConfigFile, DiskType
from .declared import write_declared
from .errors import ConnectionLost, NvirtdError
from .reconciler import Reconciler
from .runtime.notify import Notifier
from .runtime.statelock import StateLock
from .runtime.workqueue import AsyncWorkQueue
from .settings import Settings
from .sources import libvirt_events
from .sources.configdir import ConfigDirWatcher
from .status import StatusStore

log = structlog.get_logger("nvirtd")
STATUS_RETRY_SECONDS = 5.0


class Daemon:
    def __init__(self, settings: Settings, *, build_env: dict[str, str] | None = None,
                 hypervisor: HypervisorLike | None = None) -> None:
        self.settings = settings
        self.hv: Any = hypervisor or Hypervisor(settings.uri, threads=settings.workers + 2,
                                                connections=settings.connections)
        self.queue = AsyncWorkQueue()
        self.status = StatusStore(settings.state_dir)
        self._status_dirty = asyncio.Event()
        self.status.on_dirty = self._status_dirty.set
        self.images = Images(state_dir=settings.state_dir, build_command=settings.build_command,
                             jobs=settings.build_jobs, on_built=self._build_finished, build_env=build_env)
        self.reconciler = Reconciler(self.hv, self.images, self.status, images_dir=settings.images_dir,
                                     state_dir=settings.state_dir, instance=settings.instance)
        self.reconciler.enqueue = self.queue.add
        self.reader = ConfigReader(settings.config_dir, trust_checks=settings.trust_checks)
        self.notifier = Notifier()
        self.link = LibvirtLink(self.hv, self.status, self.notifier, on_connected=self._connected)
        libvirt_events.wire(self.hv, self.queue.add, self.link.lost, self.reconciler.expectations)
        self.lock = StateLock(settings.state_dir)
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.fatal: str | None = None  # why the daemon stopped itself (a task crashed)
        self._last_good: dict[str, ConfigFile] = {}
        self._ctx: RenderContext | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_wanted = asyncio.Event()
        self._explicit_reload = False
        self._initial: set[Hashable] = set()
        self._unacked: set[Hashable] = set()  # keys the last reload queued, not reconciled since
        self._unacked_since = 0.0  # a pass that began before this does not count
        self._ready_on_ack = False

    # ---- config ---------------------------------------------------------------------
    async def reload(self, *, explicit: bool) -> Rendered | None:
        """Re-read the directory, diff, enqueue what changed. Returns the new desired state.

        The reload is acknowledged (status.json's reload.finished_at, and READY=1 after
        RELOADING=1) once every key it queued has had its pass, so that `nvirtd status`
        after `nvirtd reload` shows the reload's effects."""
        async with self._reload_lock:
            started_wall = clock.wall()
            files, problem = await asyncio.to_thread(self.reader.read)
            self.status.warnings = [str(s) for s in self.reader.skipped]
            for skipped in self.reader.skipped:
                log.warning("config_file_skipped", file=skipped.file, reason=skipped.reason)
            if problem is not None:
                # never read a missing or untrusted directory as "no VMs": keep everything
                log.error("config_directory_problem", error=problem.message)
                self.status.config_errors = [problem.message]
                self._begin_reload(started_wall, [problem.message], set())
                return None
            state = merge(files, self._last_good)
            # a broken (or held) file keeps its last good content; a deleted file is forgotten
            self._last_good = {n: f.config if n not in state.broken_files else self._last_good[n]  # type: ignore[misc]
                               for n, f in files.items() if n not in state.broken_files or n in self._last_good}
            previous = self.reconciler.desired
            assert self._ctx is not None
            rendered = render_all(state, self._ctx, previous)
            keys = changed_keys(previous, rendered)
            nix_paths = self._nix_paths(rendered, None if explicit else keys)
            if explicit:
                keys |= {("domain", n) for n, d in rendered.domains.items()
                         if any(k.type == DiskType.nix for k in d.spec.disks.values())}
            self.images.invalidate(nix_paths)
            # what broken files may declare goes with the desired state it was read with (a
            # worker between the read and this line must not see one without the other)
            broken = dict(self.reader.broken_texts)
            self.reconciler.may_declare = functools.partial(may_declare, broken)
            self.reconciler.desired = rendered
            write_declared(self.settings.state_dir, rendered)
            for key in keys:
                self.queue.add(key)
            for kind, objs in (("domain", rendered.domains), ("network", rendered.networks)):
                for name, obj in objs.items():  # `nvirtd status` lists new ones at once, as pending
                    if (kind, name) not in self.status.entries:
                        self.status.update(kind, name, phase="pending", file=obj.source_file)
            errors = [str(e) for e in rendered.all_errors]
            self.status.config_errors = errors
            for err in errors:
                log.error("config_error", error=err)
            log.info("config_loaded", files=len(files), domains=len(rendered.domains),
                     networks=len(rendered.networks), changed=len(keys), errors=len(errors),
                     ms=round((clock.wall() - started_wall) * 1000, 1))
            self._begin_reload(started_wall, errors, keys)
            return rendered

    def _begin_reload(self, started_wall: float, errors: list[str], keys: set) -> None:
        self.status.reload = {"generation": self.status.reload["generation"] + 1, "started_at": started_wall,
                              "finished_at": None, "errors": errors}
        self._unacked = set(keys)
        self._unacked_since = clock.monotonic()
        if not self._unacked:
            self._ack_reload()

    def _ack_reload(self) -> None:
        self.status.reload["finished_at"] = clock.wall()
        self.status.mark_dirty()
        self.status.flush()
        if self._ready_on_ack:
            self._ready_on_ack = False
            self.notifier.ready(self.status.summary())

    @staticmethod
    def _nix_paths(rendered: Rendered, keys: set | None) -> set[str]:
        return {disk.path for name, d in rendered.domains.items() if keys is None or ("domain", name) in keys
                for disk in d.spec.disks.values() if disk.type == DiskType.nix}

    def _build_finished(self, config_path: str) -> None:
        for key in self.reconciler.waiting_on_build(config_path):
            self.queue.add(key)

    def request_reload(self, *, explicit: bool) -> None:
        self._explicit_reload |= explicit
        self._reload_wanted.set()

    async def _reload_loop(self) -> None:
        while not self.stop_event.is_set():
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            explicit, self._explicit_reload = self._explicit_reload, False
            if explicit:
                self.notifier.reloading()
                self._ready_on_ack = True
            await self.reload(explicit=explicit)

    # ---- libvirt ----------------------------------------------------------------------
    async def _resync_all(self) -> None:
        keys: set[Hashable] = set()
        for name in await self.hv.list_domains():
            keys.add(("domain", name))
        for name in await self.hv.list_networks():
            keys.add(("network", name))
        desired = self.reconciler.desired
        if desired is not None:
            keys |= {("domain", n) for n in desired.domains} | {("network", n) for n in desired.networks}
        for key in keys:
            self.queue.add(key)
        log.info("resync_queued", keys=len(keys))

    async def _connected(self) -> None:
        """After every (re)connect: the render context once, then a full resync."""
        if self._ctx is None:
            virt = self.settings.virt_type
            if virt.value == "auto":
                virt = await self.hv.default_virt_type()
            self._ctx = RenderContext(virt_type=virt, images_dir=self.settings.images_dir,
                                      state_dir=self.settings.state_dir, instance=self.settings.instance)
            log.info("libvirt_connected", uri=self.settings.uri, virt_type=virt.value,
                     instance=self.settings.instance)
            return
        await self._resync_all()

    async def _resync_loop(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), self.settings.resync_interval)
            if not self.stop_event.is_set() and self.link.up:
                try:
                    await self._resync_all()
                except NvirtdError as exc:  # the reconnect loop takes it from here
                    self.link.lost(str(exc))

    # ---- workers ----------------------------------------------------------------------
    async def _worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            kind, name = key  # type: ignore[misc]
            began = clock.monotonic()
            try:
                after = await self.reconciler.reconcile(key)  # type: ignore[arg-type]
                self.queue.forget(key)
                if after is not None:
                    self.queue.add(key, after)
            except ConnectionLost as exc:
                self.queue.add(key, 1.0)
                self.link.lost(str(exc))
            except (NvirtdError, OSError) as exc:  # OSError: a full or read-only disk, a vanished file
                delay = self.queue.failed(key, getattr(exc, "delay", None))
                self.status.update(kind, name, phase="error", error=str(exc))
                log.error("reconcile_failed", **{kind: name}, error=str(exc), retry_in=delay)
            except Exception as exc:  # a bug: report it, keep the daemon and the other VMs going
                delay = self.queue.failed(key)
                self.status.update(kind, name, phase="error", error=f"internal error: {exc!r}")
                log.exception("reconcile_crashed", **{kind: name}, retry_in=delay)
            finally:
                self.queue.done(key)
                self._initial.discard(key)
                if not self._initial:
                    self.ready.set()
                if key in self._unacked and began >= self._unacked_since:
                    self._unacked.discard(key)
                    if not self._unacked:
                        self._ack_reload()

    async def _status_loop(self) -> None:
        """Write status.json and STATUS= when something changed, at most once a second;
        an idle daemon does not wake up for it. A write that fails is retried."""
        while not self.stop_event.is_set():
            await self._status_dirty.wait()
            self._status_dirty.clear()
            written = self.status.flush()
            self.notifier.status(self.status.summary())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), 1.0 if written else STATUS_RETRY_SECONDS)
            if not written:
                self._status_dirty.set()

    async def _announce_ready(self) -> None:
        await self.ready.wait()
        self.status.flush()
        self.notifier.ready(self.status.summary())
        log.info("daemon_ready", summary=self.status.summary())

    # ---- lifecycle --------------------------------------------------------------------
    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, functools.partial(self.request_reload, explicit=True))
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)

    def stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("daemon_stopping")
            self.notifier.stopping()
            self.stop_event.set()

    def fail(self, why: str) -> None:
        """A bug escaped a task: stop (VMs untouched) and exit non-zero."""
        if self.fatal is None:
            self.fatal = why
            log.critical("daemon_failed", error=why)
        self.stop()

    async def _supervised(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(f"{name} crashed: {exc!r}")

    async def run(self) -> None:
        self.install_signals()  # before READY: a SIGHUP must never kill us
        self.lock.acquire()  # StateDirLocked: another daemon on this state dir
        try:
            await self._run_locked()
        finally:
            self.lock.release()

    async def _run_locked(self) -> None:
        watcher = None
        try:
            if not await self.link.connect_with_backoff(self.stop_event):
                return
            await self.reload(explicit=False)
            try:
                await self._resync_all()
            except NvirtdError as exc:
                self.link.lost(str(exc))
            self._initial = set(self.queue.keys.waiting)
            if self.settings.watch:
                watcher = ConfigDirWatcher(self.settings.config_dir, lambda: self.request_reload(explicit=False),
                                           debounce=self.settings.debounce)
                watcher.start()
            async with asyncio.TaskGroup() as tg:
                workers = [tg.create_task(self._supervised(f"worker-{i}", self._worker))
                           for i in range(self.settings.workers)]
                loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                    ("reload", self._reload_loop), ("reconnect", lambda: self.link.reconnect_loop(self.stop_event)),
                    ("resync", self._resync_loop), ("status", self._status_loop),
                    ("watchdog", lambda: self.notifier.watchdog_loop(self.stop_event)),
                    ("ready", self._announce_ready)]
                helpers = [tg.create_task(self._supervised(name, fn), name=name) for name, fn in loops]
                if not self._initial:
                    self.ready.set()
                await self.stop_event.wait()
                if watcher is not None:
                    watcher.stop()
                    watcher = None
                self.queue.close()
                _done, pending = await asyncio.wait(workers, timeout=self.settings.drain_timeout)
                for task in [*pending, *helpers]:
                    task.cancel()
        finally:  # each step best effort: a failing one must neither hang the exit nor skip the rest
            if watcher is not None:
                with contextlib.suppress(Exception):
                    watcher.stop()
            with contextlib.suppress(Exception):
                await self.images.cancel_builds()
            with contextlib.suppress(Exception):
                self.status.flush()
            with contextlib.suppress(Exception):
                await self.hv.close(timeout=1.0)
            self.hv.shutdown_pool()
            log.info("daemon_stopped", mutations=dict(self.hv.mutations))
