"""The composition root: connect, wire sources -> queue -> workers -> pipeline, signals, sd_notify.

Everything long-lived runs in one asyncio.TaskGroup, each task supervised: an
exception that escapes one (a bug) is logged in one line, stops the daemon and
makes `nvirtd run` exit non-zero, so systemd restarts it. Shutdown (SIGTERM, or a
crashed task): STOPPING=1, stop the sources, close the queue (which ends the
workers and every loop waiting on it or on the stop event), let in-flight passes
finish for at most `drain_timeout`, cancel the rest; whatever libvirt does
meanwhile (a hung libvirtd), the daemon is gone within seconds. VMs are never
stopped because nvirtd stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from .adapters.hypervisor import Hypervisor
from .adapters.hypervisor_protocol import HypervisorLike
from .adapters import image_gc
from .adapters.images import Images
from .backup_schedule import BackupScheduler
from .configstore import ConfigStore
from .connection import LibvirtLink
from .core.domain_xml import RenderContext
from .core.keys import Key, Kind
from .domain_kind import DomainKind
from .errors import NvirtdError
from .network_kind import NetworkKind
from .pipeline import Pipeline
from .reloads import ReloadTracker
from .runtime import clock
from .runtime.expectations import Expectations
from .runtime.notify import Notifier
from .runtime.statelock import StateLock
from .runtime.workqueue import AsyncWorkQueue
from .settings import Settings
from .sources import libvirt_events
from .sources.configdir import ConfigDirWatcher
from .status import StatusStore

log = structlog.get_logger("nvirtd")
STATUS_RETRY_SECONDS = 5.0
STARTUP_GC_THRESHOLD = 50_000  # allocations between young collections until READY (Python's default: 700)


_gc_thresholds: tuple[int, ...] | None = None  # the collector's, while calm_gc_until_ready() holds them


def calm_gc_until_ready() -> None:
    """For `nvirtd run`, once imported (one daemon per process: tests make many, so they
    do not): the start-up burst allocates a lot and leaves little cyclic garbage, yet the
    collector's passes, each over everything imported too, cost about a tenth of a cold
    start of 1,000 domains. What the imports made is frozen (never traversed again) and
    collections are rarer until READY=1, where release_memory() collects and restores them."""
    global _gc_thresholds
    gc.freeze()
    _gc_thresholds = gc.get_threshold()
    gc.set_threshold(STARTUP_GC_THRESHOLD, *_gc_thresholds[1:])


def release_memory() -> None:
    """Collect, then hand freed heap pages back to the kernel (glibc keeps them otherwise):
    the RSS a host sees is the daemon's steady state, not its start-up peak."""
    global _gc_thresholds
    gc.collect()
    if _gc_thresholds is not None:
        gc.set_threshold(*_gc_thresholds)
        _gc_thresholds = None
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Daemon:
    def __init__(self, settings: Settings, *, build_env: dict[str, str] | None = None,
                 hypervisor: HypervisorLike | None = None) -> None:
        self.settings = settings
        self.hv: Any = hypervisor or Hypervisor(settings.uri, threads=settings.workers + 2,
                                                connections=settings.connections)
        self.queue = AsyncWorkQueue()
        self.status = StatusStore(settings.state_dir)
        self.status.daemon["host"] = settings.host  # `nvirtd drain` checks it is run on the host it names
        self._status_dirty = asyncio.Event()
        self.status.on_dirty = self._status_dirty.set
        self.config = ConfigStore(settings, self.status)
        self.backups = BackupScheduler(
            uri=settings.uri, instance=settings.instance, report=self._report_backups, defined=self._is_defined,
            domains=lambda: self.config.desired.domains if self.config.desired is not None else {})
        self.images = Images(state_dir=settings.state_dir, build_command=settings.build_command,
                             jobs=settings.build_jobs, on_built=self._build_finished, build_env=build_env,
                             build_timeout=settings.build_timeout, on_progress=self._report_builds)
        self.notifier = Notifier()
        self.link = LibvirtLink(self.hv, self.status, self.notifier, on_connected=self._connected)
        self.expectations = Expectations()
        declared_networks = lambda: self.config.desired.networks if self.config.desired else ()  # noqa: E731
        kinds = [DomainKind(self.hv, self.images, self.expectations, images_dir=settings.images_dir,
                            state_dir=settings.state_dir, declared_networks=declared_networks,
                            start_concurrency=settings.start_concurrency, start_order=self.config.start_order,
                            instance=settings.instance, peers=settings.peers,
                            placed_elsewhere=self.config.placed_elsewhere, host=settings.host,
                            peer_interval=settings.peer_interval),
                 NetworkKind(self.hv)]
        self.metrics: Any = None
        if settings.metrics:  # prometheus_client is imported only when asked for
            from .metrics import Metrics
            self.metrics = Metrics(self._metrics_state)
            self.images.on_finished = self.metrics.observe_build
        self.pipeline = Pipeline(kinds, self.config, self.status, wake=self.queue.add,
                                 connection_lost=self.link.lost,
                                 on_pass=self.metrics.observe_pass if self.metrics else None)
        self.hv.subscribe(libvirt_events.sink(self.queue.add, self.link.lost, self.expectations))
        self.reloads = ReloadTracker(self.status, self.notifier)
        self.lock = StateLock(settings.state_dir)
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.fatal: str | None = None  # why the daemon stopped itself (a task crashed)
        self._reload_lock = asyncio.Lock()
        self._reload_wanted = asyncio.Event()
        self._explicit_reload = False
        self._initial: set[Key] = set()
        self._build_domains: dict[str, list[str]] = {}  # running build -> the domains waiting on it

    # ---- config ---------------------------------------------------------------------
    async def reload(self, *, explicit: bool) -> None:
        """Re-read the directory and queue what changed; acknowledged once those keys had a pass."""
        async with self._reload_lock:
            started = clock.wall()
            result = await self.config.reload(explicit=explicit)
            self.images.invalidate(result.nix_paths)
            self._build_domains.clear()  # who waits on which build may have changed
            keys = set(result.keys)
            if result.broken_changed:  # a removal held while a broken file might declare it: decide now
                keys |= {key for key, record in self.pipeline.records.items() if "held" in record.conditions}
            for key in keys:
                self.queue.add(key)
            self.reloads.begin(started, result.errors, keys)
            self.backups.wake()  # a schedule may have been added or changed

    def _build_finished(self, config_path: str) -> None:
        for key in self.config.waiting_on_build(config_path):
            self.queue.add(key)

    def request_reload(self, *, explicit: bool) -> None:
        self._explicit_reload |= explicit
        self._reload_wanted.set()

    async def _reload_loop(self) -> None:
        while not self.stop_event.is_set():
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            if self.stop_event.is_set():
                return
            explicit, self._explicit_reload = self._explicit_reload, False
            if explicit:
                self.notifier.reloading()
                self.reloads.ready_on_ack = True
            await self.reload(explicit=explicit)

    # ---- libvirt ----------------------------------------------------------------------
    async def _resync_all(self, listing: Awaitable[list[str]] | None = None) -> None:
        """Every key libvirt or the config has, queued; each listed domain is looked at in
        the listing (look_at_each), so the passes take those looks without a thread hop."""
        names = await (listing if listing is not None else self.hv.list_domains(look_at_each=True))
        keys = {Key(Kind.domain, n) for n in names}
        keys |= {Key(Kind.network, n) for n in await self.hv.list_networks()}
        keys |= self.config.all_keys()
        for key in keys:
            self.queue.add(key)
        log.info("resync_queued", keys=len(keys))

    async def _connected(self) -> None:
        """After every (re)connect: the render context once, then a full resync."""
        if self.config.ctx is None:
            virt = self.settings.virt_type
            if virt.value == "auto":
                virt = await self.hv.default_virt_type()
            self.config.ctx = RenderContext(virt_type=virt, images_dir=self.settings.images_dir,
                                            state_dir=self.settings.state_dir, instance=self.settings.instance)
            log.info("libvirt_connected", uri=self.settings.uri, virt_type=virt.value,
                     instance=self.settings.instance)
            return
        await self._resync_all()

    def _is_defined(self, name: str) -> bool:
        entry = self.status.entries.get(("domain", name))
        return entry is not None and entry.phase in ("running", "stopped", "defined", "stopping")

    def _metrics_state(self) -> dict[str, Any]:
        return {"queue_depth": len(self.queue.keys), "builds_running": self.images.building,
                "ready": 1 if self.ready.is_set() else 0, "uri": self.settings.uri,
                "libvirt_state": self.status.libvirt["state"], "reload_at": self.status.reload.get("finished_at"),
                "reload_errors": len(self.status.config_errors), "entries": list(self.status.entries.values())}

    def _report_builds(self) -> None:
        """The running builds, their progress and the domains waiting on each, in status.json.
        Called for every line a build writes: who waits on a build is looked up once per build
        (and again after a reload), not per line."""
        builds = self.images.progress()
        for path, progress in builds.items():
            if path not in self._build_domains:
                self._build_domains[path] = [key.name for key in self.config.waiting_on_build(path)]
            progress["domains"] = self._build_domains[path]
        self._build_domains = {path: names for path, names in self._build_domains.items() if path in builds}
        self.status.daemon["builds"] = builds
        self.status.mark_dirty()
        self._status_dirty.set()

    def _report_backups(self, state: dict[str, Any]) -> None:
        self.status.daemon["backups"] = state
        self.status.mark_dirty()  # status.json is only written when the store is marked
        self._status_dirty.set()

    async def _image_gc_loop(self) -> None:
        """Roots of bases no overlay uses go after the retention (adapters/image_gc.py)."""
        wait = min(60.0, self.settings.gc_interval)
        while not self.stop_event.is_set() and self.settings.image_retention is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), wait)
            wait = self.settings.gc_interval
            if self.stop_event.is_set():
                return
            try:
                found = await image_gc.collect(self.images, self.settings.images_dir,
                                               retention=self.settings.image_retention,
                                               keep_images=self.images.current_images)
            except (NvirtdError, OSError) as exc:
                log.error("image_gc_failed", error=str(exc))
                self.status.daemon["image_gc"] = {"at": clock.wall(), "error": str(exc)}
            else:
                removed = [r.store for r in found if r.removed]
                self.status.daemon["image_gc"] = {"at": clock.wall(), "roots": len(found), "removed": removed,
                                                  "error": None}
            self.status.mark_dirty()
            self._status_dirty.set()

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
            began = clock.monotonic()
            try:
                after = await self.pipeline.reconcile(key)  # type: ignore[arg-type]
                if after is not None:
                    self.queue.add(key, after)
            finally:
                self.queue.done(key)
                self._initial.discard(key)  # type: ignore[arg-type]
                if not self._initial:
                    self.ready.set()
                self.reloads.passed(key, began)

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
        await self.hv.settle()  # every fingerprint recorded: a restart from here changes nothing
        release_memory()  # what the start-up burst (1,000 files read, rendered, started) left behind
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
            self.backups.wake()

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
            metrics_server = None
            if self.metrics is not None:  # before anything else: a taken address is a clear, early exit
                from .metrics import open_server
                metrics_server = await open_server(self.metrics, str(self.settings.metrics))
            if not await self.link.connect_with_backoff(self.stop_event):
                return
            # the domains are listed and looked at while the files are read (a restart's 2,000 reads)
            listing = asyncio.ensure_future(self.hv.list_domains(look_at_each=True))
            try:
                await self.reload(explicit=False)
            except BaseException:
                listing.cancel()
                listing.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no stray warning
                raise
            try:
                await self._resync_all(listing)
            except NvirtdError as exc:
                self.link.lost(str(exc))
            self._initial = set(self.queue.keys.waiting)  # type: ignore[arg-type]
            if self.settings.watch:
                watcher = ConfigDirWatcher(self.settings.config_dir, lambda: self.request_reload(explicit=False),
                                           debounce=self.settings.debounce, also=lambda: self.config.reader.referenced)
                watcher.start()
            async with asyncio.TaskGroup() as tg:
                workers = [tg.create_task(self._supervised(f"worker-{i}", self._worker))
                           for i in range(self.settings.workers)]
                loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                    ("reload", self._reload_loop), ("reconnect", lambda: self.link.reconnect_loop(self.stop_event)),
                    ("resync", self._resync_loop), ("status", self._status_loop), ("image-gc", self._image_gc_loop),
                    ("backups", lambda: self.backups.loop(self.stop_event, self.ready)),
                    ("watchdog", lambda: self.notifier.watchdog_loop(self.stop_event)),
                    ("ready", self._announce_ready)]
                if metrics_server is not None:
                    from .metrics import serve
                    loops.append(("metrics", lambda: serve(metrics_server, self.stop_event)))
                helpers = [tg.create_task(self._supervised(name, fn), name=name) for name, fn in loops]
                if not self._initial:
                    self.ready.set()
                await self.stop_event.wait()
                if watcher is not None:
                    watcher.stop()
                    watcher = None
                self.queue.close()
                _done, pending = await asyncio.wait(workers, timeout=self.settings.drain_timeout)
                for task in [*pending, *helpers]:  # the helpers wait on events that will not come now
                    task.cancel()
        finally:  # each step best effort: a failing one must neither hang the exit nor skip the rest
            if watcher is not None:
                with contextlib.suppress(Exception):
                    watcher.stop()
            with contextlib.suppress(Exception):
                await self.images.cancel_builds()
            with contextlib.suppress(Exception):
                self.status.flush()
            settling = self.hv.settle()  # every fingerprint recorded: a restart then changes nothing
            try:
                await asyncio.wait_for(settling, timeout=1.0)
            except Exception:  # noqa: BLE001 - best effort, like every step here
                pass
            finally:
                settling.close()  # not started at all (a cancelled stop): no "never awaited" warning
            with contextlib.suppress(Exception):
                await self.hv.close(timeout=1.0)
            self.hv.shutdown_pool()
            log.info("daemon_stopped", mutations=dict(self.hv.mutations))
