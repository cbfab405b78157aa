"""Shared fixtures. Every libvirt test gets a fresh libvirt state:

- in-process `test:///default` is reset when its last connection closes; the
  `fresh_libvirt` fixture holds one connection for the test and checks that the
  state it starts from is the driver's pristine one (a leaked connection fails);
- tests marked `integration` talk to the real libvirtd at qemu:///system and clean
  up the objects they create (names start with `nvt-`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shutil
import subprocess
import time
from pathlib import Path

import libvirt
import pytest

from daemon.adapters.hypervisor import register_event_loop
from daemon.app import Daemon
from daemon.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TEST_URI = "test:///default"
libvirt.registerErrorHandler(lambda *_: None, None)


def write_json(path: Path, data: object, mode: int = 0o644) -> Path:
    path.write_text(json.dumps(data, indent=2))
    path.chmod(mode)
    return path


def domain(memory_mib: int = 128, **extra: object) -> dict:
    return {"memory": {"amount": memory_mib, "unit": "MiB"}, **extra}


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("config", "state", "images")}
    for p in d.values():
        p.mkdir(mode=0o755)
        p.chmod(0o755)
    tmp_path.chmod(0o755)
    return d


@pytest.fixture
async def fresh_libvirt():
    # the event implementation must exist before the driver is first opened,
    # or the test driver never dispatches its events
    register_event_loop()
    # The test driver keeps one state while any connection to it lives, and a virDomain
    # keeps its connection alive. On a loaded machine the last test's connection can
    # outlive it for a moment (a handle in a garbage cycle, a callback purged on the
    # event loop's next turn): wait for that, but fail on state that really stays.
    deadline = time.monotonic() + 5
    while True:
        conn = libvirt.open(TEST_URI)
        names = sorted(d.name() for d in conn.listAllDomains())
        if names == ["test"] or time.monotonic() > deadline:
            break
        conn.close()
        gc.collect()  # a handle of the last test's may sit in a garbage cycle
        await asyncio.sleep(0.05)
    assert names == ["test"], f"test driver state leaked from another test: {names}"
    yield conn
    conn.close()


@pytest.fixture
def settings(dirs: dict[str, Path]) -> Settings:
    return Settings(uri=TEST_URI, config_dir=str(dirs["config"]), state_dir=str(dirs["state"]),
                    images_dir=str(dirs["images"]), watch=False, workers=4, resync_interval=3600,
                    drain_timeout=5)


class RunningDaemon:
    def __init__(self, daemon: Daemon, task: asyncio.Task) -> None:
        self.daemon = daemon
        self.task = task

    @property
    def hv(self):
        return self.daemon.hv

    async def settle(self, timeout: float = 10.0, horizon: float = 0.3) -> None:
        """Wait until nothing is due soon, nothing runs and no build is going."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = None
        while loop.time() < deadline:
            if self.task.done():
                self.task.result()
            busy = not self.daemon.queue.idle(horizon) or self.daemon.images.building
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = loop.time()
            elif loop.time() - quiet_since > 0.15:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("daemon did not settle")

    async def reload(self, explicit: bool = True) -> None:
        await self.daemon.reload(explicit=explicit)
        await self.settle()

    def entry(self, name: str, kind: str = "domain"):
        return self.daemon.status.entries.get((kind, name))


@pytest.fixture
async def start_daemon(fresh_libvirt):
    started: list[RunningDaemon] = []

    async def start(settings: Settings, **kwargs) -> RunningDaemon:
        daemon = Daemon(settings, **kwargs)
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 10)
        running = RunningDaemon(daemon, task)
        started.append(running)
        await running.settle()
        return running

    yield start
    for running in started:
        running.daemon.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running.task, 10)


def nix_env() -> dict[str, str]:
    """Settings that single-user nix needs on these machines (no daemon, no nixbld, no cache)."""
    return {"NIX_CONFIG": "substituters =\nbuild-users-group =\nsandbox = false\n"}


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def virt_xml_validate(path: Path, kind: str) -> subprocess.CompletedProcess:
    return subprocess.run(["virt-xml-validate", str(path), kind], capture_output=True, text=True)
