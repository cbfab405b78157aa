"""The daemon never hangs and never dies of its surroundings.

- A bug that escapes any long-lived task stops the daemon within seconds, with one
  line saying which task and why, and `nvirtd run` exits non-zero. The faults are
  injected by replacing one method (a bug cannot be made real on purpose).
- SIGTERM at any moment, also during the first convergence, ends it quickly.
- A state directory that is full or read-only costs the status file, not the
  reconciling: the log and the status say so, and the write is retried.
- `nvirtd reload` returns after the reload's changes are in the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.errors import ConnectionLost
from tests.conftest import domain, write_json
from tests.service.test_notify import stop

LOOPS = ["reload", "resync", "status", "watchdog", "reconnect", "worker", "ready"]


def inject(daemon: Daemon, task: str, monkeypatch) -> None:
    """Make `task` raise a bug as soon as it runs (before or after start-up)."""
    def boom(*_a, **_k):
        raise RuntimeError(f"injected into {task}")

    async def aboom(*_a, **_k):
        boom()
    if task == "watchdog":
        monkeypatch.setattr(daemon.notifier, "watchdog_loop", aboom)
    elif task == "reconnect":
        monkeypatch.setattr(daemon.link, "reconnect_loop", aboom)
    elif task == "ready":
        monkeypatch.setattr(daemon.notifier, "ready", boom)


def inject_after_start(daemon: Daemon, task: str, monkeypatch) -> None:
    async def aboom(*_a, **_k):
        raise RuntimeError(f"injected into {task}")
    if task == "reload":
        monkeypatch.setattr(daemon, "reload", aboom)
        daemon.request_reload(explicit=True)
    elif task == "resync":
        monkeypatch.setattr(daemon, "_resync_all", aboom)
    elif task == "status":
        monkeypatch.setattr(daemon.status, "flush", lambda: (_ for _ in ()).throw(RuntimeError("injected into status")))
        daemon.status.mark_dirty()
    elif task == "worker":
        monkeypatch.setattr(daemon.queue, "get", aboom)
        daemon.queue.add(("domain", "web"))


@pytest.mark.parametrize("task", LOOPS)
async def test_a_bug_in_any_long_lived_task_stops_the_daemon_fast(task, dirs, settings, fresh_libvirt, monkeypatch):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    daemon = Daemon(dataclasses.replace(settings, resync_interval=0.2))
    inject(daemon, task, monkeypatch)
    run = asyncio.create_task(daemon.run())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(daemon.ready.wait()), 3)
    started = time.monotonic()
    inject_after_start(daemon, task, monkeypatch)
    await asyncio.wait_for(run, 5)
    assert time.monotonic() - started < 5
    assert daemon.fatal is not None and f"injected into {task}" in daemon.fatal
    assert fresh_libvirt.lookupByName("web").isActive() == 1, "stopping nvirtd never stops a VM"


async def test_a_lost_connection_during_the_periodic_resync_is_a_reconnect_not_a_crash(dirs, settings, start_daemon,
                                                                                        monkeypatch):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    d = await start_daemon(dataclasses.replace(settings, resync_interval=0.2))
    connects = d.daemon.link.connects
    real = d.hv.list_domains
    calls = {"n": 0}

    async def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionLost("lost the connection (injected)")
        return await real(**kwargs)
    monkeypatch.setattr(d.hv, "list_domains", flaky)
    for _ in range(100):
        if d.daemon.link.connects > connects:
            break
        await asyncio.sleep(0.05)
    assert d.daemon.link.connects > connects and not d.task.done() and d.daemon.fatal is None


def test_an_injected_crash_makes_nvirtd_run_exit_non_zero_with_one_line(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    code = ("import sys, daemon.app as app\n"
            "async def boom(self): raise RuntimeError('injected')\n"
            "app.Daemon._status_loop = boom\n"
            "from daemon.__main__ import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", code, "run", "--connect", "test:///default", "--config-dir",
                             str(dirs["config"]), "--state-dir", str(dirs["state"]), "--images-dir",
                             str(dirs["images"]), "--log-level", "error"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == "nvirtd: stopped after an internal error: status crashed: RuntimeError('injected')"
    assert "Traceback" not in result.stderr


def test_sigterm_during_the_first_convergence_exits_within_seconds(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {f"vm{i}": domain() for i in range(400)}})
    log = dirs["state"] / "log"
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--connect", "test:///default", "--config-dir",
                             str(dirs["config"]), "--state-dir", str(dirs["state"]), "--images-dir",
                             str(dirs["images"]), "--workers", "2"], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        deadline = time.monotonic() + 30
        while "domain_start" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < 5
        assert "daemon_ready" not in log.read_text(), "SIGTERM came too late to test the first convergence"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def tiny_state_dir(tmp_path):
    """A 64 KiB tmpfs, as a state directory on a small, full or read-only disk would be."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    return filler


async def test_a_full_state_dir_costs_the_status_file_not_the_reconciling(dirs, settings, tiny_state_dir,
                                                                           start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    d = await start_daemon(dataclasses.replace(settings, state_dir=str(tiny_state_dir)))
    filler = fill(tiny_state_dir)
    write_json(dirs["config"] / "b.json", {"domains": {"db": domain()}})
    await d.reload()
    assert fresh_libvirt.lookupByName("db").isActive() == 1, "reconciling stopped with the disk full"
    assert not d.task.done()
    status = d.daemon.status
    assert status.write_error and "cannot write status to" in status.write_error and "No space left" in status.write_error
    assert status.write_error in status.summary()  # STATUS= says it too
    assert [p.name for p in tiny_state_dir.iterdir() if p.name.endswith(".tmp")] == []
    filler.unlink()
    for _ in range(150):  # retried every few seconds
        if status.write_error is None:
            break
        await asyncio.sleep(0.05)
    assert status.write_error is None
    written = json.loads((tiny_state_dir / "status.json").read_text())
    assert {e["name"] for e in written["domains"]} == {"web", "db"} and "cannot write" not in written["summary"]


async def test_a_read_only_state_dir_still_runs_and_says_so(dirs, settings, tiny_state_dir, start_daemon, fresh_libvirt):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_state_dir)], check=True)
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    d = await start_daemon(dataclasses.replace(settings, state_dir=str(tiny_state_dir)))
    assert fresh_libvirt.lookupByName("web").isActive() == 1
    assert "Read-only file system" in d.daemon.status.write_error


async def test_errors_are_pinned_on_their_own_domain_only(dirs, settings, start_daemon):
    names = ("web", "web2", "web.x")
    write_json(dirs["config"] / "a.json", {"domains": {n: domain() for n in names}})
    d = await start_daemon(settings)
    broken = {n: domain() for n in names}
    broken["web2"] = {"memory": {"amount": 128, "unit": "GiG"}}
    write_json(dirs["config"] / "a.json", {"domains": broken})
    await d.reload()
    assert "domains.web2.memory.unit" in d.entry("web2").error
    assert d.entry("web").error is None and d.entry("web.x").error is None
    assert all("held" in d.entry(n).conditions for n in names)


def test_reload_returns_once_its_changes_are_in_the_status(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    argv = [sys.executable, "-m", "daemon", "run", "--connect", "test:///default", "--config-dir", str(dirs["config"]),
            "--state-dir", str(dirs["state"]), "--images-dir", str(dirs["images"]), "--no-watch"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = [sys.executable, "-m", "daemon"]
    try:
        for _ in range(200):
            with contextlib.suppress(OSError, ValueError):
                if json.loads((dirs["state"] / "status.json").read_text())["domains"][0]["phase"] == "running":
                    break
            time.sleep(0.05)
        write_json(dirs["config"] / "b.json", {"domains": {f"new{i}": domain() for i in range(30)}})
        assert subprocess.run([*cli, "reload", "--state-dir", str(dirs["state"])], timeout=30).returncode == 0
        shown = json.loads(subprocess.run([*cli, "status", "--json", "--state-dir", str(dirs["state"])],
                                          capture_output=True, text=True, timeout=30).stdout)
        phases = {e["name"]: e["phase"] for e in shown["domains"]}
        assert all(phases.get(f"new{i}") == "running" for i in range(30)), phases
    finally:
        assert stop(proc) == 0


def test_a_closed_pipe_ends_quietly(dirs):
    # more than a pipe holds, so that the writer is still writing when `head` has gone
    rows = [{"kind": "domain", "name": f"vm{i}", "phase": "running", "conditions": [], "changed_at": 0}
            for i in range(3000)]
    (dirs["state"] / "status.json").write_text(json.dumps({"summary": "3000 domains", "domains": rows}))
    result = subprocess.run(f"{sys.executable} -m daemon status --state-dir {dirs['state']} | head -1", shell=True,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.startswith("nvirtd: 3000 domains") and result.stderr == ""


def test_ctrl_c_exits_130_without_a_traceback(dirs):
    # a process that ignores SIGHUP stands in for a daemon that never answers the reload
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, "
                                "signal.SIG_IGN); time.sleep(60)"])
    try:
        (dirs["state"] / "status.json").write_text(json.dumps({"daemon": {"pid": sleeper.pid}, "reload": {}}))
        time.sleep(0.3)
        cli = subprocess.Popen([sys.executable, "-m", "daemon", "reload", "--state-dir", str(dirs["state"])],
                               stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=10) == 130
        assert "Traceback" not in cli.stderr.read()
    finally:
        sleeper.kill()
