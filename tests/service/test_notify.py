"""The sd_notify protocol, byte for byte, with a real NOTIFY_SOCKET and the daemon as a child.

The daemon runs against its in-process test driver (test:///default); everything
here is observed from outside, as systemd would: the datagrams it sends, the
status file, its exit code.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.runtime.notify import Notifier
from tests.conftest import domain, write_json


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.seen: list[str] = []

    def receive_until(self, predicate, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.seen.append(msg)
            if predicate(msg):
                return msg
        raise AssertionError(f"no matching notification; saw {self.seen[-10:]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def spawn(dirs, notify: NotifySocket, *, watchdog_usec: int | None = None, extra=()) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    env.pop("WATCHDOG_PID", None)
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    argv = [sys.executable, "-m", "daemon", "run", "--connect", "test:///default",
            "--config-dir", str(dirs["config"]), "--state-dir", str(dirs["state"]),
            "--images-dir", str(dirs["images"]), *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(dirs["state"] / "log", "w"))


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


def test_ready_status_reload_watchdog_stopping_byte_for_byte(dirs, notify_socket):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(), "db": domain(state="stopped")}})
    proc = spawn(dirs, notify_socket, watchdog_usec=400_000)
    try:
        ready = notify_socket.receive_until(lambda m: m.startswith("READY=1"))
        assert ready in ("READY=1\nSTATUS=2 domains: 1 running, 1 stopped",
                         "READY=1\nSTATUS=2 domains: 1 running, 1 defined"), ready
        # WATCHDOG=1 at half of WATCHDOG_USEC: several within a second
        t0 = time.monotonic()
        for _ in range(3):
            assert notify_socket.receive_until(lambda m: m == "WATCHDOG=1", 2) == "WATCHDOG=1"
        assert time.monotonic() - t0 < 1.5
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = notify_socket.receive_until(lambda m: m.startswith("RELOADING=1"))
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        head, usec = reloading.split("\n")
        assert head == "RELOADING=1" and usec.startswith("MONOTONIC_USEC=")
        assert before <= int(usec.removeprefix("MONOTONIC_USEC=")) <= after
        again = notify_socket.receive_until(lambda m: m.startswith("READY=1"))
        assert again.startswith("READY=1\nSTATUS=2 domains")
        assert stop(proc) == 0
        assert notify_socket.receive_until(lambda m: m == "STOPPING=1", 5) == "STOPPING=1"
    finally:
        stop(proc)


def test_status_line_follows_changes(dirs, notify_socket):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    proc = spawn(dirs, notify_socket)
    try:
        notify_socket.receive_until(lambda m: m.startswith("READY=1"))
        write_json(dirs["config"] / "a.json", {"domains": {"web": domain(), "db": domain()}})
        notify_socket.receive_until(lambda m: m == "STATUS=2 domains: 2 running", 10)
        (dirs["config"] / "a.json").write_text("{broken")
        notify_socket.receive_until(lambda m: m == "STATUS=2 domains: 2 running; 2 with conditions; 1 config error", 10)
    finally:
        assert stop(proc) == 0


def test_no_watchdog_pings_without_watchdog_usec(dirs, notify_socket):
    write_json(dirs["config"] / "a.json", {"domains": {}})
    proc = spawn(dirs, notify_socket)
    try:
        notify_socket.receive_until(lambda m: m.startswith("READY=1"))
        time.sleep(0.5)
        with pytest.raises(AssertionError):
            notify_socket.receive_until(lambda m: m == "WATCHDOG=1", 0.5)
    finally:
        stop(proc)


async def test_watchdog_pings_stop_while_the_event_loop_is_blocked(tmp_path, monkeypatch):
    sock = NotifySocket(tmp_path / "n.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    stop_event = asyncio.Event()
    task = asyncio.create_task(Notifier().watchdog_loop(stop_event))
    await asyncio.sleep(0.3)
    pings_before = _drain(sock)
    time.sleep(0.5)  # the loop is blocked: no task runs, so no ping may be sent meanwhile
    blocked = _drain(sock)
    await asyncio.sleep(0.3)
    pings_after = _drain(sock)
    stop_event.set()
    await task
    sock.close()
    assert pings_before >= 4 and pings_after >= 4
    assert blocked <= 1  # at most the one already due when the loop froze


def _drain(sock: NotifySocket) -> int:
    sock.sock.setblocking(False)
    count = 0
    try:
        while True:
            if sock.sock.recv(4096) == b"WATCHDOG=1":
                count += 1
    except BlockingIOError:
        pass
    sock.sock.settimeout(0.1)
    return count


def test_watchdog_pid_for_another_process_disables_pings(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval() == 0.5


def test_logs_are_json_lines_with_the_domain_as_a_field(dirs, notify_socket):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(), "db": domain()}})
    proc = spawn(dirs, notify_socket)
    try:
        notify_socket.receive_until(lambda m: m.startswith("READY=1"))
    finally:
        assert stop(proc) == 0
    lines = [json.loads(line) for line in (dirs["state"] / "log").read_text().splitlines()]
    summaries = [e for e in lines if e["event"] == "reconciled" and "domain" in e]
    for name in ("web", "db"):
        mine = [e for e in summaries if e["domain"] == name]
        assert mine and mine[0]["actions"] == ["define", "set-autostart(true)", "start"]
        assert isinstance(mine[0]["ms"], float) and mine[0]["phase"] == "running"
        assert {"domain_define", "domain_start"} <= {e["event"] for e in lines if e.get("domain") == name}
    assert all("timestamp" in e and "level" in e for e in lines)


def test_daemon_waits_for_an_unreachable_libvirtd_and_stops_cleanly(dirs, notify_socket):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket.path)}
    uri = f"qemu+unix:///system?socket={dirs['state']}/no-libvirtd.sock"
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--connect", uri, "--config-dir",
                             str(dirs["config"]), "--state-dir", str(dirs["state"])],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        status = notify_socket.receive_until(lambda m: m.startswith(f"STATUS=libvirt at {uri} unreachable since"), 10)
        assert "Failed to connect socket" in status
        time.sleep(2.0)  # several retries meanwhile
        assert proc.poll() is None, "gave up instead of waiting for libvirtd"
    finally:
        assert stop(proc) == 0
    log = proc.stderr.read()
    assert log.count("libvirt_connect_failed") == 1, "one log line per state change, not per retry"
