"""Seeded schedules: what happens to a daemon's world, step by step, as plain data.

A schedule is generated from its seed once, before it runs; every random choice
is in the steps themselves, so a schedule (or any part of it, when shrinking)
replays exactly. Steps: config edits (add, change, remove, move a name to another
file, break a file, declare a name twice), reloads, what an administrator does with
virsh, foreign objects and another nvirtd instance taking a name, guests that
ignore ACPI, connection loss, libvirtd down for a while, calls that fail, and
daemon restarts by SIGTERM and by kill -9.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

NAMES = ("d0", "d1", "d2", "d3", "d4", "d5")
FILES = ("a.json", "b.json", "c.json")
# spec variants a domain may take (index -> JSON)
VARIANTS = (
    {"memory": {"amount": 128, "unit": "MiB"}},
    {"memory": {"amount": 256, "unit": "MiB"}},
    {"memory": {"amount": 128, "unit": "MiB"}, "state": "stopped"},
    {"memory": {"amount": 192, "unit": "MiB"}, "restartOnChange": True, "shutdownTimeout": 30},
    {"memory": {"amount": 128, "unit": "MiB"}, "shutdownTimeout": 45, "cpu": {"amount": 2}},
)
FAULT_OPS = ("define_domain", "start", "shutdown", "destroy", "undefine", "set_autostart", "observe_domain",
             "list_domains", "mark_shutdown")


@dataclass(frozen=True)
class Step:
    kind: str
    args: tuple = ()
    wait: float = 0.0  # virtual seconds to let pass after it

    def __str__(self) -> str:
        args = ", ".join(json.dumps(a) if not isinstance(a, tuple) else json.dumps(list(a)) for a in self.args)
        return f"{self.kind}({args}) +{self.wait:g}s"


def file_text(domains: tuple[tuple[str, int], ...]) -> str:
    return json.dumps({"domains": {name: VARIANTS[v] for name, v in domains}})


def generate(seed: int, *, length: int | None = None) -> list[Step]:
    rng = random.Random(seed)
    steps: list[Step] = []
    for _ in range(length or rng.randint(4, 24)):
        roll = rng.random()
        wait = rng.choice((0.0, 0.0, 0.05, 0.5, 2.0, 6.0, 30.0, 130.0))
        if roll < 0.30:
            picked = rng.sample(NAMES, rng.randint(0, 3))
            steps.append(Step("write", (rng.choice(FILES), tuple((n, rng.randrange(len(VARIANTS))) for n in picked)),
                              wait))
        elif roll < 0.36:
            steps.append(Step("break", (rng.choice(FILES),), wait))
        elif roll < 0.42:
            steps.append(Step("delete", (rng.choice(FILES),), wait))
        elif roll < 0.55:
            steps.append(Step("reload", (rng.random() < 0.5,), wait))
        elif roll < 0.65:
            steps.append(Step(rng.choice(("oob_destroy", "oob_undefine", "oob_start", "oob_edit")),
                              (rng.choice(NAMES),), wait))
        elif roll < 0.69:
            steps.append(Step(rng.choice(("foreign", "other_instance")), (rng.choice(NAMES),), wait))
        elif roll < 0.72:
            steps.append(Step("deaf", (rng.choice(NAMES),), wait))
        elif roll < 0.78:
            steps.append(Step("drop", (), wait))
        elif roll < 0.82:
            steps.append(Step("libvirtd_down", (rng.choice((1.0, 5.0, 40.0)),), wait))
        elif roll < 0.90:
            steps.append(Step("fault", (rng.choice(FAULT_OPS),), wait))
        elif roll < 0.95:
            steps.append(Step("restart", (), wait))
        else:
            steps.append(Step("kill", (), wait))
    # the quiet end: a clean config (its names chosen by the seed) to converge to
    final = tuple((n, rng.randrange(len(VARIANTS))) for n in rng.sample(NAMES, rng.randint(0, len(NAMES))))
    steps.append(Step("final", (final,), 0.0))
    return steps
