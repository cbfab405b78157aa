"""Show that the simulator bites: put a defect back, count the schedules until it is found.

    .venv/bin/python -m tests.simulation.bites [--limit 2000]

Each defect is a temporary patch of the daemon (undone afterwards), most of them
defects of the safety and bad-input issues or of this simulator's own first run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from daemon.adapters import image_gc, proc
from daemon.adapters.images import Images
from daemon.configstore import ConfigStore
from daemon.core import domain_plan, domain_xml, live_changes, plan
from daemon.domain_kind import DomainKind
from daemon.runtime.expectations import Expectations

from .runner import quiet
from .schedule import generate
from .world import run_schedule


@contextlib.contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


def _gate_without(check: str):
    real = plan.gate

    def gate(kind, wanted, observed, *, held_phase):
        undeclared = wanted.obj is None and observed is not None
        if undeclared and observed.owner is not None and check == "instance":
            return real(kind, dataclasses.replace(wanted, instance=observed.owner.owned_by), observed,
                        held_phase=held_phase)
        if undeclared and observed.owner is None and check == "foreign":
            return None if not (wanted.conflict or wanted.held) else real(kind, wanted, observed,
                                                                           held_phase=held_phase)
        return real(kind, wanted, observed, held_phase=held_phase)
    return gate


async def _no_root(self, image):
    return None


def _recreate_by_default():
    real = DomainKind._overlays

    async def overlays(self, name, desired):
        return tuple(dataclasses.replace(o, recreate_on_change=True) for o in await real(self, name, desired))
    return patched(DomainKind, "_overlays", overlays)


def _ignore_broken_files():
    real = ConfigStore.wanted

    def wanted(self, key, obj, owner_file):
        saved, self._may_declare = self._may_declare, lambda name: None
        try:
            return real(self, key, obj, owner_file)
        finally:
            self._may_declare = saved
    return patched(ConfigStore, "wanted", wanted)


def _forget_last_good():
    real = ConfigStore.render

    def render(self, files, **kwargs):
        self._last_good = {}
        return real(self, files, **kwargs)
    return patched(ConfigStore, "render", render)


def _gc_ignores_moved_aside():
    real = image_gc._users

    async def users(images, images_dir, keep):
        found = await real(images, images_dir, keep)
        aside = {e["backing"] for o, e in images.registry().items() if ".replaced-" in o and e.get("backing")}
        aside_stores = {images.root_of(b) for b in aside}
        live = {images.root_of(e["backing"]) for o, e in images.registry().items()
                if ".replaced-" not in o and e.get("backing") and os.path.exists(o)}
        return {s: u for s, u in found.items() if s not in aside_stores or s in live}
    return patched(image_gc, "_users", users)


def _shrink_allowed():
    """The plan's refusal and the adapter's check gone: a lowered nix.size shrinks the overlay."""
    def grow(p, ov):
        if ov.wanted_size is None or not ov.virtual_size or ov.wanted_size == ov.virtual_size:
            return None, None
        return plan.Action(plan.Act.grow_overlay, disk=ov.disk, size=ov.wanted_size), None

    async def resize(self, overlay, size, *, domain, disk):
        await proc.run(["qemu-img", "resize", "--shrink", "-q", "-f", "qcow2", overlay, str(size)])
    return _both(patched(domain_plan, "_grow", grow), patched(Images, "grow_overlay", resize))


@contextlib.contextmanager
def _both(*patches: Any) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


DEFECTS = {
    "another instance's domain is removed (the ownership gate skips the instance)":
        lambda: patched(domain_plan, "gate", _gate_without("instance")),
    "a foreign domain is removed (the ownership gate skips foreign objects)":
        lambda: patched(domain_plan, "gate", _gate_without("foreign")),
    "the spec hash is not stable (a restart with an unchanged config redefines)":
        lambda: patched(domain_xml, "digest_of", lambda text, _c=iter(range(10**9)): f"{next(_c):032d}"),
    "a base image is not GC-rooted (garbage collection takes an overlay's base)":
        lambda: _both(patched(Images, "ensure_root", _no_root), patched(Images, "is_rooted", lambda self, i: True)),
    "an overlay is recreated on every image change (onImageChange ignored)": _recreate_by_default,
    "a removal ignores a broken file that may declare the name": _ignore_broken_files,
    "a broken file's last good content is forgotten (its domains are removed)": _forget_last_good,
    "a lowered nix.size shrinks the overlay (no refusal in the plan or the adapter)": _shrink_allowed,
    "the image collector drops the base of an overlay moved aside": _gc_ignores_moved_aside,
}
# put back too, and not found: the main() below tries them and says so (docs/development.md says why)
UNFOUND = {
    "expected events never expire (a later real change is swallowed)":
        lambda: patched(Expectations, "__init__", _expect_forever),
}
# found by a directed schedule (tests/simulation/test_simulation.py): too rare for random ones
DIRECTED = {
    "a live change's steps are recorded only at the end (a pass failing half-way leaves a false record)":
        lambda: _live_recorded_at_the_end(),
}


def _live_recorded_at_the_end():
    real = live_changes.plan_live

    def at_the_end(*args, **kwargs):
        result = real(*args, **kwargs)
        if isinstance(result, live_changes.LivePlan):
            last = len(result.actions) - 1
            kept = tuple(a for i, a in enumerate(result.actions) if a.kind != plan.Act.set_live_owner or i == last)
            result = dataclasses.replace(result, actions=kept)
        return result
    return patched(live_changes, "plan_live", at_the_end)


def _expect_forever(self, *, clock=None, ttl=30.0):
    _real_init(self, ttl=float("inf"), **({"clock": clock} if clock else {}))


_real_init = Expectations.__init__


def _first_failing(defect: str, seeds: range) -> int | None:
    with {**DEFECTS, **UNFOUND}[defect]():
        return next((seed for seed in seeds if run_schedule(generate(seed)) is not None), None)


def schedules_to_find(defect: str, limit: int, jobs: int = 1) -> int | None:
    """How many schedules, from seed 0 on, until one fails with the defect put back (the same
    count whatever `jobs` is: chunks are looked at in order, each in a process of its own)."""
    if jobs <= 1:
        found = _first_failing(defect, range(limit))
        return None if found is None else found + 1
    chunks = [range(s, min(s + 100, limit)) for s in range(0, limit, 100)]
    # not multiprocessing.Pool: leaving it early (terminate) hangs on workers waiting for work
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=quiet)
    try:
        for future in [pool.submit(_first_failing, defect, chunk) for chunk in chunks]:
            found = future.result()
            if found is not None:
                return found + 1
        return None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.simulation.bites")
    p.add_argument("--limit", type=int, default=2000)
    args = p.parse_args(argv)
    quiet()
    missed = 0
    for defect in [*DEFECTS, *UNFOUND]:
        found = schedules_to_find(defect, args.limit, jobs=os.cpu_count() or 1)
        missed += found is None and defect in DEFECTS
        print(f"{'found after ' + str(found) + ' schedules' if found else 'NOT found in ' + str(args.limit):>28}: {defect}",
              flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
