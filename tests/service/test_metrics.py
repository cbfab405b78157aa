"""The Prometheus endpoint (`--metrics`), scraped as Prometheus would: over HTTP, parsed
with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.errors import StartupError
from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for


def scrape(address: str, path: str = "/metrics") -> tuple[str, str]:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address.removeprefix("unix:"))
    else:
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)))
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: nvirtd\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


def samples(body: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


async def test_a_scrape_shows_passes_phases_the_connection_and_reloads(dirs, settings, start_daemon, tmp_path):
    address = f"unix:{tmp_path}/metrics.sock"
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(), "db": domain(state="stopped")}})
    d = await start_daemon(replace(settings, metrics=address))
    status, body = await asyncio.to_thread(scrape, address)
    assert status == "HTTP/1.1 200 OK"
    got = samples(body)
    assert got[("nvirtd_object_phase", (("kind", "domain"), ("name", "web"), ("phase", "running")))] == 1
    assert got[("nvirtd_object_phase", (("kind", "domain"), ("name", "web"), ("phase", "stopped")))] == 0
    assert got[("nvirtd_object_phase", (("kind", "domain"), ("name", "db"), ("phase", "stopped")))] == 1
    assert got[("nvirtd_reconciles_total", (("kind", "domain"), ("result", "ok")))] >= 2
    assert got[("nvirtd_actions_total", (("action", "start"), ("kind", "domain")))] == 1
    assert got[("nvirtd_libvirt_connected", (("uri", settings.uri),))] == 1
    assert got[("nvirtd_ready", ())] == 1 and got[("nvirtd_queue_depth", ())] >= 0
    assert got[("nvirtd_last_reload_errors", ())] == 0 and got[("nvirtd_last_reload_timestamp_seconds", ())] > 0
    assert ("nvirtd_reconcile_duration_seconds_count", (("kind", "domain"),)) in got

    (dirs["config"] / "a.json").write_text('{"domains": {"web": {"cpu": 3}}}')  # broken: held, counted
    await d.reload()
    await wait_for(lambda: d.daemon.status.config_errors, 5, "the config error")
    got = samples((await asyncio.to_thread(scrape, address))[1])
    assert got[("nvirtd_last_reload_errors", ())] == len(d.daemon.status.config_errors) > 0
    assert got[("nvirtd_object_condition", (("condition", "held"), ("kind", "domain"), ("name", "web")))] == 1
    assert (await asyncio.to_thread(scrape, address, "/"))[0] == "HTTP/1.1 404 Not Found"


async def test_a_client_that_sends_nothing_does_not_hold_the_daemon(dirs, settings, start_daemon, tmp_path,
                                                                    monkeypatch):
    from daemon import metrics
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 0.2)
    address = f"unix:{tmp_path}/metrics.sock"
    d = await start_daemon(replace(settings, metrics=address))
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(address.removeprefix("unix:"))
    await asyncio.sleep(0.4)
    assert idle.recv(10) == b""  # dropped after the timeout
    idle.close()
    assert (await asyncio.to_thread(scrape, address))[0] == "HTTP/1.1 200 OK"
    d.daemon.stop()
    await asyncio.wait_for(d.task, 5)


async def test_a_taken_port_is_a_clear_startup_error(dirs, settings, tmp_path):
    from daemon.app import Daemon
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    try:
        with pytest.raises(StartupError, match=f"cannot serve metrics on {address}: Address already in use"):
            await asyncio.wait_for(Daemon(replace(settings, metrics=address)).run(), 10)
    finally:
        taken.close()


async def test_a_localhost_port_serves_too(dirs, settings, start_daemon):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    address = f"127.0.0.1:{port}"
    await start_daemon(replace(settings, metrics=address))
    status, body = await asyncio.to_thread(scrape, address)
    assert status == "HTTP/1.1 200 OK" and "nvirtd_ready 1.0" in body
