"""Seeded schedules: what happens to a daemon's world, step by step, as plain data.

A schedule is generated from its seed once, before it runs; every random choice
is in the steps themselves, so a schedule (or any part of it, when shrinking)
replays exactly. Steps: config edits (add, change, remove, move a name to another
file, break a file, declare a name twice), reloads and SIGHUP storms, what an
administrator does with virsh, foreign objects and another nvirtd instance taking a
name, guests that ignore ACPI, connection loss, libvirtd down for a while, calls that
fail, events duplicated, delayed or reordered, a full state disk, nix images that
change, builds that fail, finish late or hang, overlay creation failing half-way,
garbage collection of the nix store, and daemon restarts by SIGTERM and by kill -9.
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
    # nix disks: an overlay on a NixOS image built from {nix}/vm.nix (kept, or recreated on a new image)
    {"memory": {"amount": 128, "unit": "MiB"}, "disks": {"root": {"type": "nix", "path": "{nix}/vm.nix"}}},
    {"memory": {"amount": 128, "unit": "MiB"}, "shutdownTimeout": 20,
     "disks": {"root": {"type": "nix", "path": "{nix}/vm.nix", "nix": {"onImageChange": "recreate"}}}},
    # a declared size (the base is 2 GiB): going 5 -> 7 -> 8 grows the overlay, 8 -> 7 must be refused
    {"memory": {"amount": 128, "unit": "MiB"}, "disks": {"root": {"type": "nix", "path": "{nix}/vm.nix",
                                                                 "nix": {"size": 3}}}},
    {"memory": {"amount": 128, "unit": "MiB"}, "disks": {"root": {"type": "nix", "path": "{nix}/vm.nix",
                                                                 "nix": {"size": 4}}}},
    # started only while d0 runs; removed with it, stopped first (d0 naming itself is a config error)
    {"memory": {"amount": 128, "unit": "MiB"}, "startAfter": ["d0"], "shutdownTimeout": 15},
    # live changes: between these two a running guest takes vCPUs, memory and a NIC without a
    # restart; back the other way, fewer vCPUs need a boot and the NIC is unplugged
    {"memory": {"amount": 128, "max": 256, "unit": "MiB"}, "cpu": {"amount": 1, "max": 4}},
    {"memory": {"amount": 192, "max": 256, "unit": "MiB"}, "cpu": {"amount": 3, "max": 4},
     "interfaces": {"lan": {"network": "default"}}},
    # guests beyond NixOS: an overlay on a base outside the store ({nix}/base.qcow2, never
    # collected), and a cloud-init seed whose change is a changed definition
    {"memory": {"amount": 128, "unit": "MiB"}, "disks": {"root": {"type": "image", "path": "{nix}/base.qcow2"}},
     "cloudInit": {"userData": "#cloud-config\nhostname: one\n"}},
    {"memory": {"amount": 128, "unit": "MiB"}, "cloudInit": {"userData": "#cloud-config\nhostname: two\n"}},
)
AFTER_D0 = 9
CLASSIC = 10  # the variants before session 7; the later ones are drawn from a stream of their own (below)
LATER_SHARE = 0.2
BUILD_MODES = ("ok", "fail", "late", "hang")
EVENT_MODES = ("normal", "duplicate", "delay", "reorder")
FAULT_OPS = ("define_domain", "start", "shutdown", "destroy", "undefine", "set_autostart", "observe_domain",
             "list_domains", "mark_shutdown", "set_vcpus", "attach_device", "detach_device", "set_live_owner")


@dataclass(frozen=True)
class Step:
    kind: str
    args: tuple = ()
    wait: float = 0.0  # virtual seconds to let pass after it

    def __str__(self) -> str:
        args = ", ".join(json.dumps(a) if not isinstance(a, tuple) else json.dumps(list(a)) for a in self.args)
        return f"{self.kind}({args}) +{self.wait:g}s"


def variant(v: int, nix_dir: str) -> dict:
    return json.loads(json.dumps(VARIANTS[v]).replace("{nix}", nix_dir))


def file_text(domains: tuple[tuple[str, int], ...], nix_dir: str) -> str:
    return json.dumps({"domains": {name: variant(v, nix_dir) for name, v in domains}})


def _variants(rng: random.Random, later: random.Random):
    """A variant's index: the classic ones from the schedule's stream, as before they were
    joined; a fifth of the picks then turned into a later one by a stream of its own. So adding
    variants keeps every older schedule's shape, and the defects it found (a new variant
    drawn from the one stream diluted the rest: one defect went from seed 106 to 9461)."""
    def pick() -> int:
        v = rng.randrange(CLASSIC)
        if later.random() < LATER_SHARE:
            v = CLASSIC + later.randrange(len(VARIANTS) - CLASSIC)
        return v
    return pick


def _steps(rng: random.Random, variant_of) -> list[tuple[float, object]]:
    """(weight, make the step's args) per kind of step."""
    one = lambda *choices: lambda: (rng.choice(choices),)  # noqa: E731
    return [
        (26, ("write", lambda: (rng.choice(FILES), tuple((n, variant_of())
                                                         for n in rng.sample(NAMES, rng.randint(0, 3)))))),
        (5, ("break", lambda: (rng.choice(FILES), rng.choice(("stub", "half"))))), (5, ("delete", one(*FILES))),
        (11, ("reload", lambda: (rng.random() < 0.5,))), (2, ("hup_storm", lambda: ())),
        (9, (None, lambda: (rng.choice(("oob_destroy", "oob_undefine", "oob_start", "oob_edit")),
                            (rng.choice(NAMES),)))),
        (4, (None, lambda: (rng.choice(("foreign", "other_instance")), (rng.choice(NAMES),)))),
        (3, ("deaf", one(*NAMES))), (5, ("drop", lambda: ())), (3, ("libvirtd_down", one(1.0, 5.0, 40.0))),
        (4, ("fault", one(*FAULT_OPS))), (3, ("events", one(*EVENT_MODES))), (2, ("disk_full", one(2.0, 30.0))),
        (2, ("nix_edit", lambda: ())), (2, ("gc", lambda: ())), (2, ("create_fails", lambda: ())),
        (3, ("build_mode", one(*BUILD_MODES))), (5, ("restart", lambda: ())), (4, ("kill", lambda: ())),
    ]


def generate(seed: int, *, length: int | None = None) -> list[Step]:
    rng = random.Random(seed)
    variant_of = _variants(rng, random.Random(seed ^ 0x5EED7))
    table = _steps(rng, variant_of)
    weights = [w for w, _ in table]
    steps: list[Step] = []
    for _ in range(length or rng.randint(4, 24)):
        kind, make = rng.choices([k for _, k in table], weights)[0]
        wait = rng.choice((0.0, 0.0, 0.05, 0.5, 2.0, 6.0, 30.0, 130.0))
        made = make()  # type: ignore[operator]
        if kind is None:  # the kind itself was chosen with its args
            kind, made = made
        steps.append(Step(kind, made, wait))
    # the quiet end: a clean config (its names chosen by the seed) to converge to
    final = tuple((n, variant_of()) for n in rng.sample(NAMES, rng.randint(0, len(NAMES))))
    steps.append(Step("final", (clean_order(final),), 0.0))
    return steps


def clean_order(final: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """A final config without a startAfter error (which would hold the whole file): d0 never
    names itself, and nothing names d0 unless d0 is declared."""
    declared = {n: v for n, v in final}
    ok = "d0" in declared and declared["d0"] != AFTER_D0
    return tuple((n, 0 if v == AFTER_D0 and (n == "d0" or not ok) else v) for n, v in final)
