"""The composition root: connect, wire sources -> queue -> workers, signals, sd_notify.

Everything long-lived runs in one asyncio.TaskGroup. Shutdown: STOPPING=1, stop the
sources, let in-flight reconciles finish (bounded by drain_timeout), cancel the
rest. VMs are never stopped because nvirtd stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Hashable

import structlog

from .adapters.hypervisor import Hypervisor
from .adapters.images import Images
from .configfiles import ConfigReader
from .core.config import merge
from .core.desired import Rendered, changed_keys, render_all
from .core.domain_xml import RenderContext
from .core.spec import ConfigFile, DiskType, VirtType
from .errors import ConnectionLost, NvirtdError
from .reconciler import Reconciler
from .runtime.notify import Notifier
from .runtime.workqueue import AsyncWorkQueue
from .settings import Settings
from .sources import libvirt_events
from .sources.configdir import ConfigDirWatcher
from .status import StatusStore

log = structlog.get_logger("nvirtd")


class Daemon:
    def __init__(self, settings: Settings, *, build_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.hv = Hypervisor(settings.uri, threads=settings.workers + 2, connections=settings.connections)
        self.queue = AsyncWorkQueue()
        self.status = StatusStore(settings.state_dir)
        self._status_dirty = asyncio.Event()
        self.status.on_dirty = self._status_dirty.set
        self.images = Images(state_dir=settings.state_dir, build_command=settings.build_command,
                             jobs=settings.build_jobs, on_built=self._build_finished, build_env=build_env)
        self.reconciler = Reconciler(self.hv, self.images, self.status, images_dir=settings.images_dir,
                                     state_dir=settings.state_dir)
        self.reconciler.enqueue = self.queue.add
        self.reader = ConfigReader(settings.config_dir, trust_checks=settings.trust_checks)
        self.notifier = Notifier()
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self._last_good: dict[str, ConfigFile] = {}
        self._ctx: RenderContext | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_wanted = asyncio.Event()
        self._explicit_reload = False
        self._lost = asyncio.Event()
        self._initial: set[Hashable] = set()

    # ---- config ---------------------------------------------------------------------
    async def reload(self, *, explicit: bool) -> Rendered | None:
        """Re-read the directory, diff, enqueue what changed. Returns the new desired state."""
        async with self._reload_lock:
            started_wall = time.time()
            files, problem = await asyncio.to_thread(self.reader.read)
            if problem is not None:
                # never read a missing or untrusted directory as "no VMs": keep everything
                log.error("config_directory_problem", error=problem.message)
                self.status.config_errors = [problem.message]
                self._finish_reload(started_wall, [problem.message])
                return None
            state = merge(files, self._last_good)
            # a broken file keeps its last good content; a deleted file is forgotten
            self._last_good = {n: f.config if f.ok else self._last_good[n]  # type: ignore[misc]
                               for n, f in files.items() if f.ok or n in self._last_good}
            previous = self.reconciler.desired
            assert self._ctx is not None
            rendered = render_all(state, self._ctx, previous)
            keys = changed_keys(previous, rendered)
            nix_paths = self._nix_paths(rendered, None if explicit else keys)
            if explicit:
                keys |= {("domain", n) for n, d in rendered.domains.items()
                         if any(k.type == DiskType.nix for k in d.spec.disks.values())}
            self.images.invalidate(nix_paths)
            self.reconciler.desired = rendered
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
                     ms=round((time.time() - started_wall) * 1000, 1))
            self._finish_reload(started_wall, errors)
            return rendered

    def _finish_reload(self, started_wall: float, errors: list[str]) -> None:
        self.status.reload = {"generation": self.status.reload["generation"] + 1, "started_at": started_wall,
                              "finished_at": time.time(), "errors": errors}
        self.status.mark_dirty()
        self.status.flush()

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
            try:
                await self.reload(explicit=explicit)
            finally:
                if explicit:
                    self.notifier.ready(self.status.summary())

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

    async def _connect(self) -> None:
        libvirt_events.wire(self.hv, self.queue.add, self._connection_lost, self.reconciler.expectations)
        await self.hv.connect()
        if self._ctx is None:
            virt = self.settings.virt_type
            if virt == VirtType.auto:
                virt = await self.hv.default_virt_type()
            self._ctx = RenderContext(virt_type=virt, images_dir=self.settings.images_dir,
                                      state_dir=self.settings.state_dir)
            log.info("libvirt_connected", uri=self.settings.uri, virt_type=virt.value)

    def _connection_lost(self, reason: str) -> None:
        log.warning("libvirt_connection_lost", uri=self.settings.uri, reason=reason)
        self._lost.set()

    async def _reconnect_loop(self) -> None:
        while not self.stop_event.is_set():
            await self._lost.wait()
            if self.stop_event.is_set():
                return
            await self.hv.close()
            if not await self._connect_with_backoff():
                return
            self._lost.clear()
            log.info("libvirt_reconnected", uri=self.settings.uri)
            await self._resync_all()

    async def _resync_loop(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), self.settings.resync_interval)
            if not self.stop_event.is_set() and not self._lost.is_set():
                await self._resync_all()

    # ---- workers ----------------------------------------------------------------------
    async def _worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            kind, name = key  # type: ignore[misc]
            try:
                after = await self.reconciler.reconcile(key)  # type: ignore[arg-type]
                self.queue.forget(key)
                if after is not None:
                    self.queue.add(key, after)
            except ConnectionLost as exc:
                self.queue.add(key, 1.0)
                self._connection_lost(str(exc))
            except NvirtdError as exc:
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

    async def _status_loop(self) -> None:
        """Write status.json and STATUS= when something changed, at most once a second;
        an idle daemon does not wake up for it."""
        while not self.stop_event.is_set():
            await self._status_dirty.wait()
            self._status_dirty.clear()
            self.status.flush()
            self.notifier.status(self.status.summary())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), 1.0)
        self.status.flush()

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

    async def _connect_with_backoff(self) -> bool:
        """Connect, retrying while libvirtd is not there yet (started together at boot).
        False when asked to stop meanwhile."""
        delay = 0.5
        while not self.stop_event.is_set():
            try:
                await self._connect()
                return True
            except NvirtdError as exc:
                await self.hv.close()
                log.warning("libvirt_connect_failed", uri=self.settings.uri, error=str(exc), retry_in=delay)
                self.notifier.status(f"waiting for libvirt at {self.settings.uri}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
                delay = min(delay * 2, 30.0)
        return False

    async def run(self) -> None:
        self.install_signals()  # before READY: a SIGHUP must never kill us
        if not await self._connect_with_backoff():
            return
        await self.reload(explicit=False)
        await self._resync_all()
        self._initial = set(self.queue.keys.waiting)
        watcher = None
        if self.settings.watch:
            watcher = ConfigDirWatcher(self.settings.config_dir, lambda: self.request_reload(explicit=False),
                                       debounce=self.settings.debounce)
            watcher.start()
        try:
            async with asyncio.TaskGroup() as tg:
                workers = [tg.create_task(self._worker(), name=f"worker-{i}") for i in range(self.settings.workers)]
                helpers = [tg.create_task(c, name=c.__name__) for c in (
                    self._reload_loop(), self._reconnect_loop(), self._resync_loop(), self._status_loop(),
                    self.notifier.watchdog_loop(self.stop_event))]
                if not self._initial:
                    self.ready.set()
                tg.create_task(self._announce_ready())
                await self.stop_event.wait()
                if watcher is not None:
                    watcher.stop()
                    watcher = None
                self.queue.close()
                _done, pending = await asyncio.wait(workers, timeout=self.settings.drain_timeout)
                for task in pending:
                    task.cancel()
                self._reload_wanted.set()
                self._lost.set()
                self._status_dirty.set()
                for task in helpers:
                    if task.get_name() != "_status_loop":
                        task.cancel()
        finally:
            if watcher is not None:
                watcher.stop()
            await self.images.cancel_builds()
            self.status.flush()
            await self.hv.close()
            self.hv.shutdown_pool()
            log.info("daemon_stopped", mutations=dict(self.hv.mutations))

    async def _announce_ready(self) -> None:
        await self.ready.wait()
        self.status.flush()
        self.notifier.ready(self.status.summary())
        log.info("daemon_ready", summary=self.status.summary())
