"""Prometheus metrics (`--metrics unix:/run/nvirtd/metrics.sock` or `--metrics 127.0.0.1:9477`).

Off by default. Counters and histograms are updated as things happen (a pass, a build);
everything else is read from the daemon's own state at scrape time, so a scrape costs
no libvirt call and an idle daemon does no work for metrics. The endpoint is a small
asyncio server answering `GET /metrics` with prometheus_client's text format; a client
that sends nothing is dropped after a few seconds, so it can never hold the daemon.

`nvirtd status` stays the human view; these are for Prometheus and alerting
(docs/operations.md lists them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import StartupError

log = structlog.get_logger("nvirtd.metrics")
PHASES = ("pending", "building", "defined", "running", "stopping", "stopped", "error")
REQUEST_TIMEOUT = 5.0
_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120)
_BUILD_SECONDS = (10, 60, 300, 900, 1800, 3600, 4 * 3600)


class Metrics:
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        """`state()` returns what the gauges show: see StateCollector.collect."""
        with contextlib.suppress(AttributeError):  # prometheus_client < 0.17 has no switch: *_created stays
            prometheus_client.disable_created_metrics()  # one _created series per counter: noise here
        self.registry = CollectorRegistry(auto_describe=False)  # the state collector is read at scrape time only
        r = self.registry
        self.passes = Counter("nvirtd_reconciles", "Reconcile passes, by kind of object and result (ok, failed)",
                              ["kind", "result"], registry=r)
        self.pass_seconds = Histogram("nvirtd_reconcile_duration_seconds", "How long one reconcile pass took",
                                      ["kind"], buckets=_SECONDS, registry=r)
        self.errors = Counter("nvirtd_errors", "Failed passes, by kind of object and of failure (failure: "
                              "temporary, permanent: waits for a change, connection: libvirt went away)",
                              ["kind", "error"], registry=r)
        self.actions = Counter("nvirtd_actions", "Changes made (define, start, shutdown, create-overlay, ...)",
                               ["kind", "action"], registry=r)
        self.builds = Counter("nvirtd_image_builds", "Finished nix image builds, by result (built, failed)",
                              ["result"], registry=r)
        self.build_seconds = Histogram("nvirtd_image_build_duration_seconds", "How long a nix image build took",
                                       buckets=_BUILD_SECONDS, registry=r)
        r.register(StateCollector(state))

    def observe_pass(self, kind: str, failure: Any, done: tuple, seconds: float) -> None:
        self.passes.labels(kind, "failed" if failure is not None else "ok").inc()
        self.pass_seconds.labels(kind).observe(seconds)
        if failure is not None:
            self.errors.labels(kind, str(failure.backoff.value)).inc()
        for action in done:
            self.actions.labels(kind, action.kind.value).inc()

    def observe_build(self, ok: bool, seconds: float) -> None:
        self.builds.labels("built" if ok else "failed").inc()
        self.build_seconds.observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class StateCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.state()
        yield _gauge("nvirtd_queue_depth", "Keys waiting for a reconcile pass", s["queue_depth"])
        yield _gauge("nvirtd_image_builds_running", "nix image builds running now", s["builds_running"])
        yield _gauge("nvirtd_ready", "1 once the first pass over every object is done", s["ready"])
        link = GaugeMetricFamily("nvirtd_libvirt_connected", "1 while nvirtd is connected to libvirt", labels=["uri"])
        link.add_metric([s["uri"]], 1 if s["libvirt_state"] == "connected" else 0)
        yield link
        yield _gauge("nvirtd_last_reload_timestamp_seconds", "When the config was last read (Unix time)",
                     s["reload_at"] or 0)
        yield _gauge("nvirtd_last_reload_errors", "Config errors the last reload found (0: all files good)",
                     s["reload_errors"])
        phase = GaugeMetricFamily("nvirtd_object_phase", "1 for the phase each domain and network is in",
                                  labels=["kind", "name", "phase"])
        condition = GaugeMetricFamily("nvirtd_object_condition", "1 for each condition an object has",
                                      labels=["kind", "name", "condition"])
        for entry in s["entries"]:
            for p in PHASES:
                phase.add_metric([entry.kind, entry.name, p], 1 if entry.phase == p else 0)
            for c in entry.conditions:
                condition.add_metric([entry.kind, entry.name, c], 1)
        yield phase
        yield condition


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


async def open_server(metrics: Metrics, address: str) -> asyncio.AbstractServer:
    """Listen on `address` (unix:PATH, or HOST:PORT); StartupError when it cannot."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            parts = request.split(b" ", 2)
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                status, body, kind = b"200 OK", metrics.text(), CONTENT_TYPE_LATEST.encode()
            else:
                status, body, kind = b"404 Not Found", b"nvirtd serves GET /metrics only\n", b"text/plain"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that said nothing in time, or went away
        finally:
            writer.close()

    try:
        if address.startswith("unix:"):
            path = address.removeprefix("unix:")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a socket left by a daemon that died
            server = await asyncio.start_unix_server(answer, path=path)
            os.chmod(path, 0o660)
        else:
            host, _, port = address.rpartition(":")
            server = await asyncio.start_server(answer, host=host.strip("[]"), port=int(port))
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own text repeats the address
        raise StartupError(f"cannot serve metrics on {address}: {why}") from None
    log.info("metrics_serving", address=address)
    return server


async def serve(server: asyncio.AbstractServer, stop: asyncio.Event) -> None:
    async with server:
        await stop.wait()
