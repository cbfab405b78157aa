"""The daemon's timing, as tables: the real daemon on the fake hypervisor, in virtual time.

Every wait the pipeline makes (shutdown re-sends and timeouts, crash-loop and
failure back-offs, the missing-path retry, waiting for a network) is checked to
the virtual second, without a real sleep: the loop's clock jumps to the next
timer (tests/simulation/vloop.py). Each row is a scenario and the libvirt calls
it must lead to, with their times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from daemon.adapters.fake_hypervisor import FakeHypervisor
from daemon.adapters.hypervisor_protocol import DomainOp, Start
from daemon.app import Daemon
from daemon.errors import HypervisorError
from daemon.settings import Settings
from tests.conftest import domain
from tests.simulation.vloop import VirtualClock, VirtualLoop


class TimedFake(FakeHypervisor):
    """The fake, recording (virtual time, operation, name) of each mutating call."""

    def __init__(self, vclock: VirtualClock) -> None:
        super().__init__()
        self.vclock = vclock
        self.log: list[tuple[float, str, str]] = []
        self.refuse_starts = 0  # this many starts fail as libvirt would refuse them
        self.refuse_network_starts = 0
        self.dies_after_start: float | None = None  # the guest crashes this long after each start
        self.start_takes = 0.0  # virtual seconds a start takes (QEMU setting up a guest)
        self.starting = self.most_starting = 0

    async def apply(self, name: str, ops: list[DomainOp]) -> None:
        for op in ops:
            self.log.append((round(self.vclock.now, 2), op.counter, name))
            if isinstance(op, Start) and self.refuse_starts:
                self.refuse_starts -= 1
                raise HypervisorError("internal error: qemu unexpectedly closed the monitor")
        starts = any(isinstance(op, Start) for op in ops)
        if starts and self.start_takes:
            self.starting += 1
            self.most_starting = max(self.most_starting, self.starting)
            await asyncio.sleep(self.start_takes)
            self.starting -= 1
        await super().apply(name, ops)
        if starts and self.dies_after_start is not None:
            asyncio.get_running_loop().call_later(self.dies_after_start, self.oob_destroy, name)

    async def start_network(self, name: str, xml: str | None = None) -> None:
        self.log.append((round(self.vclock.now, 2), "start_network", name))
        if self.refuse_network_starts:
            self.refuse_network_starts -= 1
            raise HypervisorError("internal error: Network is already in use by interface virbr7")
        await super().start_network(name, xml)

    def times(self, op: str, name: str | None = None) -> list[float]:
        return [t for t, o, n in self.log if o == op and (name is None or n == name)]


class VirtualDaemon:
    """One daemon process on its own virtual loop; `at(t)` runs it until virtual time t."""

    def __init__(self, root: Path, **settings: object) -> None:
        self.clock = VirtualClock()
        self.clock.install()
        self.loop = VirtualLoop(self.clock)
        asyncio.set_event_loop(self.loop)
        self.config = root / "config"
        for d in ("config", "state", "images"):
            (root / d).mkdir()
        self.hv = TimedFake(self.clock)
        self.daemon = Daemon(Settings(uri="fake:///", config_dir=str(self.config), state_dir=str(root / "state"),
                                      images_dir=str(root / "images"), watch=False, trust_checks=False,
                                      resync_interval=3600.0, **settings), hypervisor=self.hv)
        self.task: asyncio.Task | None = None

    def write(self, data: dict) -> None:
        (self.config / "a.json").write_text(json.dumps(data))

    def start(self) -> None:
        self.task = self.loop.create_task(self.daemon.run())

    def at(self, t: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(max(0.0, t - self.clock.now)))

    def reload(self) -> None:
        self.loop.run_until_complete(self.daemon.reload(explicit=True))

    def entry(self, name: str):
        return self.daemon.status.entries.get(("domain", name))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.daemon.stop()
            if self.task is not None:
                self.loop.run_until_complete(asyncio.wait_for(self.task, 10))
        self.loop.close()
        self.clock.uninstall()
        asyncio.set_event_loop(None)


@pytest.fixture
def vd(tmp_path):
    d = VirtualDaemon(tmp_path)
    yield d
    d.close()


def test_a_guest_that_ignores_acpi_gets_acpi_every_5_s_and_is_destroyed_at_its_timeout(vd):
    vd.write({"domains": {"deaf": domain(shutdownTimeout=12)}})
    vd.start()
    vd.at(10)
    vd.hv._by_name("deaf").obeys_acpi = False
    vd.write({"domains": {}})
    vd.reload()
    vd.at(60)
    assert vd.hv.times("shutdown") == [10, 15, 20]
    assert vd.hv.times("destroy") == [22] and vd.hv.times("undefine") == [22]


def test_a_guest_that_keeps_dying_is_restarted_at_once_then_after_5_10_20_s(vd):
    vd.hv.dies_after_start = 1.0
    vd.write({"domains": {"flaky": domain()}})
    vd.start()
    vd.at(60)
    starts = vd.hv.times("start")
    gaps = [round(b - a) for a, b in zip(starts, starts[1:])]
    assert gaps[:4] == [1, 5, 10, 20]  # no wait after the first death, then 5 s, 10 s, 20 s from the last start
    assert "crash-loop" in vd.entry("flaky").conditions


def test_a_refused_start_is_retried_after_1_2_4_s_and_the_error_is_shown_meanwhile(vd):
    vd.hv.refuse_starts = 3
    vd.write({"domains": {"web": domain()}})
    vd.start()
    vd.at(2)
    assert vd.entry("web").phase == "error" and "qemu unexpectedly closed" in vd.entry("web").error
    vd.at(30)
    assert vd.hv.times("start") == [0, 1, 3, 7]
    assert vd.entry("web").phase == "running" and vd.entry("web").error is None


def test_a_missing_disk_file_holds_the_define_but_not_the_shutdown_it_came_with(vd, tmp_path):
    disk = tmp_path / "data.img"
    disk.write_bytes(b"")
    spec = {"disks": {"data": {"type": "file", "path": str(disk)}}}
    vd.write({"domains": {"db": domain(**spec)}})
    vd.start()
    vd.at(5)
    disk.unlink()  # the file went; the config now also asks for the VM to stop, with more memory
    vd.write({"domains": {"db": domain(512, state="stopped", **spec)}})
    vd.reload()
    vd.at(10)
    assert vd.hv.times("shutdown") == [5], "the shutdown went ahead"
    assert vd.hv.times("define_domain") == [0], "no define on a missing file"
    assert vd.entry("db").phase == "error" and "data.img does not exist" in vd.entry("db").error
    disk.write_bytes(b"")
    vd.at(40)
    assert vd.hv.times("define_domain") == [0, 35], "defined at the 30 s retry once the file is back"


def test_a_domain_waits_for_its_network_in_libvirt_and_starts_once_it_runs(vd):
    vd.hv.refuse_network_starts = 2
    net = {"ip": {"address": "10.77.0.1"}}
    vd.write({"networks": {"lab": net}, "domains": {"web": domain(interfaces={"eth0": {"network": "lab"}})}})
    vd.start()
    vd.at(0.5)
    assert vd.entry("web").phase == "defined" and "waiting for network lab" in vd.entry("web").message
    vd.at(10)
    assert vd.hv.times("start_network") == [0, 0, 2], "refused twice in a row (the second after the define's event), then 2 s later"
    assert vd.hv.times("start", "web") == [2], "the domain started as soon as its network ran"


def test_a_removal_held_by_a_broken_file_goes_ahead_once_that_file_is_gone(vd):
    """Found by the simulator once its safety resync was turned off: the held removal was
    never looked at again (the domain stayed, running, until the next resync)."""
    vd.write({"domains": {"old": domain()}})
    vd.start()
    vd.at(1)
    (vd.config / "c.json").write_text('{"domains": {"old": ')  # might declare it
    vd.write({"domains": {}})
    vd.reload()
    vd.at(10)
    assert vd.hv._by_name("old") is not None and "held" in vd.entry("old").conditions
    (vd.config / "c.json").unlink()
    vd.reload()
    vd.at(20)
    assert vd.hv._by_name("old") is None, "removed once no broken file may declare it"


@pytest.mark.parametrize("cap,most,done_at", [(0, 6, 2.0), (2, 2, 6.0), (1, 1, 12.0)])
def test_start_concurrency_caps_the_guests_starting_at_once(tmp_path, cap, most, done_at):
    """Six guests whose start takes 2 s: all at once without a cap, two by two with 2."""
    vd = VirtualDaemon(tmp_path, start_concurrency=cap)
    try:
        vd.hv.start_takes = 2.0
        vd.write({"domains": {f"vm{i}": domain() for i in range(6)}})
        vd.start()
        vd.at(30)
        assert vd.hv.most_starting == most
        assert max(d.power.active for d in vd.hv.domains.values()) and all(
            vd.entry(f"vm{i}").phase == "running" for i in range(6))
        assert max(t for t, op, _ in vd.hv.log if op == "start") + 2.0 == pytest.approx(done_at)
    finally:
        vd.close()
