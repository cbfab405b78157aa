"""Running schedules, in this process or spread over fresh ones (shared by the CLI,
bites.py and the tests: a spawned process imports what it runs from here)."""

from __future__ import annotations

import logging
import multiprocessing
import sys
import warnings

import structlog

from .schedule import generate
from .world import run_schedule


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 10)
    # a killed daemon's loop is dropped with its coroutines unfinished, as a killed process's
    sys.unraisablehook = lambda _unraisable: None
    warnings.simplefilter("ignore", RuntimeWarning)


def _run_seeds(seeds: range) -> list[tuple[int, str]]:
    return [(seed, failure) for seed in seeds if (failure := run_schedule(generate(seed))) is not None]


def failures(first: int, count: int, jobs: int) -> list[tuple[int, str]]:
    """(seed, failure) of every failing schedule, in seed order."""
    chunks = [range(s, min(s + 50, first + count)) for s in range(first, first + count, 50)]
    if jobs <= 1:
        return [f for chunk in chunks for f in _run_seeds(chunk)]
    with multiprocessing.get_context("spawn").Pool(jobs, initializer=quiet) as pool:
        return [f for found in pool.imap(_run_seeds, chunks) for f in found]


