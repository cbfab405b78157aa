"""The simulator in the default suite: thousands of seeded schedules hold every
invariant, each re-introduced defect is found, a seed replays exactly, and a
failure shrinks to a smaller schedule that still fails."""

from __future__ import annotations

import pytest

from tests.simulation.__main__ import shrink
from tests.simulation.runner import failures, quiet
from tests.simulation.bites import DEFECTS, DIRECTED, schedules_to_find
from tests.simulation.schedule import Step, generate
from tests.simulation.world import World, run_schedule


@pytest.fixture(autouse=True, scope="module")
def _quiet():
    quiet()
    yield
    import gc
    gc.collect()  # killed daemons' coroutines finish (and log) here, still quietly
    from daemon import logs
    logs.configure("info")


def test_twelve_hundred_schedules_hold_every_invariant():
    # in this process: a pool of processes started from a test session hangs (its threads);
    # 1,200 keep the suite near its 10 minutes (`python -m tests.simulation` runs 10,000)
    assert failures(0, 1200, jobs=1) == []


LAST_GOOD = "a broken file's last good content is forgotten (its domains are removed)"


@pytest.mark.parametrize("defect", [d for d in DEFECTS if d != LAST_GOOD])
def test_the_simulator_finds_a_reintroduced_defect(defect):
    assert schedules_to_find(defect, 400) is not None


# d3 moves from b.json to a.json, then a.json breaks: its last good content must keep d3
# running. Random schedules find this only after about 2,900 (2.5 min of the suite; a
# broken file's domains are also held by their owner element's file); this is the schedule
# of seed 2863, which finds it with the defect put back, made smaller by the simulator's shrink
LAST_GOOD_MOVED = [Step("write", ("b.json", (("d3", 4),)), 0.0), Step("restart", (), 0.5),
                   Step("write", ("b.json", (("d0", 3),)), 2.0), Step("write", ("a.json", (("d3", 4),)), 30.0),
                   Step("reload", (True,), 6.0), Step("break", ("a.json", "stub"), 6.0), Step("hup_storm", (), 0.5),
                   Step("final", ((("d5", 0), ("d1", 3), ("d2", 9), ("d0", 11), ("d4", 9), ("d3", 11)),), 0.0)]


def test_a_broken_file_keeps_its_last_good_content():
    assert run_schedule(LAST_GOOD_MOVED) is None
    with DEFECTS[LAST_GOOD]():
        found = run_schedule(LAST_GOOD_MOVED)
    assert found is not None and found.startswith("invariant 5: shutdown of running 'd3'")


# a running d1 takes 2 more vCPUs, memory and a NIC; the NIC's plug fails after the vCPUs went in
LIVE_HALF_DONE = [Step("write", ("a.json", (("d1", 10),)), 6), Step("reload", (False,), 30),
                  Step("fault", ("attach_device",), 0), Step("write", ("a.json", (("d1", 11),)), 0.5),
                  Step("reload", (False,), 30), Step("final", ((("d1", 11),),), 0)]


def test_a_live_change_failing_half_way_leaves_a_true_record():
    assert run_schedule(LIVE_HALF_DONE) is None
    with DIRECTED["a live change's steps are recorded only at the end (a pass failing half-way leaves a "
                  "false record)"]():
        found = run_schedule(LIVE_HALF_DONE)
    assert found is not None and found.startswith("invariant 7: running 'd1': its record says 1 vCPUs, the guest has 3")


def test_a_seed_replays_exactly():
    runs = []
    for _ in range(2):
        world = World(generate(384))
        world.run()
        runs.append((world.trace, dict(world.hv.mutations), world.vclock.now))
    assert runs[0] == runs[1]


def test_a_failure_shrinks_to_fewer_steps_that_still_fail():
    with DEFECTS["another instance's domain is removed (the ownership gate skips the instance)"]():
        seed = next(s for s in range(200) if run_schedule(generate(s)) is not None)
        steps = generate(seed)
        small = shrink(steps)
        assert len(small) < len(steps) and run_schedule(small) is not None
