"""Fuzzing the config parser: any input whatsoever is a result, never an exception.

A seeded generator (reproducible: the failing seed is in the assertion) makes
10,000 inputs of three kinds: random JSON values built from the format's own
option names and hostile leaves (huge numbers, NaN, control characters, deep
nesting, duplicate keys), byte-level mutations of valid and corpus files, and
truncations. Each goes through the whole pure pipeline a reload uses: parse,
merge with a good file, render. Any exception escaping it is a crash.
"""

from __future__ import annotations

import json
import random

from daemon.core.config import MAX_ERRORS_PER_FILE, _KNOWN_KEYS, merge, parse_text
from daemon.core.desired import render_all
from daemon.core.domain_xml import RenderContext
from daemon.core.spec import VirtType
from tests.conftest import REPO

CTX = RenderContext(VirtType.kvm, "/img", "/state")
SEEDS = [json.dumps({"domains": {"web": {"memory": {"amount": 1, "unit": "GiB"}, "cpu": {"amount": 2},
                                         "disks": {"root": {"type": "nix", "path": "/etc/nixos/web.nix",
                                                            "nix": {"size": 20, "unit": "G"}}},
                                         "interfaces": {"lan": {"network": "lab"}}}},
                     "networks": {"lab": {"ip": {"address": "10.7.0.1", "prefix": 24},
                                          "dhcp": {"range": {"start": "10.7.0.10", "end": "10.7.0.99"},
                                                   "hosts": {"web": "10.7.0.5"}}}}}, indent=1)]
SEEDS += [p.read_text(errors="replace") for p in sorted((REPO / "tests" / "data" / "bad-input").glob("*.json"))
          if p.stat().st_size < 10_000]
KEYS = sorted(_KNOWN_KEYS) + ["domains", "networks", "qa", "qa\n", "", "web.x", "..", "a/b", "\u202e", "x" * 70]
LEAVES = [0, -1, 1, 2**63, 10**400, 1.5, 1e308, True, False, None, "", "nix", "file", "MiB", "G", "10.0.0.1",
          "::1", "/etc/x.nix", "52:54:00:aa:bb:01", "vda", "\x00", "a\nb", "\ud800"[:0] + "\u2028", "x" * 5000]


def random_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 6 or roll < 0.35:
        return rng.choice(LEAVES)
    if roll < 0.85:
        return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def structured(rng: random.Random) -> str:
    top = {"domains": {rng.choice(KEYS): random_value(rng) for _ in range(rng.randint(0, 3))}}
    if rng.random() < 0.5:
        top["networks"] = {rng.choice(KEYS): random_value(rng) for _ in range(rng.randint(0, 2))}
    text = json.dumps(top, allow_nan=True)
    if rng.random() < 0.1:  # a duplicate key somewhere
        text = text.replace('{"', '{"dup": 1, "dup": 2, "', 1)
    return text


def mutated(rng: random.Random) -> str:
    text = list(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.3 and text:
            del text[min(pos, len(text) - 1)]
        elif op < 0.6:
            text.insert(pos, rng.choice('{}[]",:0123456789-eE.\\ntfnul \n\x00\u00ff'))
        elif op < 0.8:
            text.insert(pos, rng.choice(['"domains"', "NaN", "1e999", "9" * 5000, "[" * 200, '"\\ud800"', "-0"]))
        elif text:
            text = text[:pos]  # a truncated save
    return "".join(text)


def generate(seed: int) -> str:
    rng = random.Random(seed)
    return structured(rng) if rng.random() < 0.5 else mutated(rng)


def through_the_pipeline(text: str) -> None:
    parsed = parse_text("fuzz.json", text)
    assert len(parsed.errors) <= MAX_ERRORS_PER_FILE + 1
    assert all(str(e).startswith("fuzz.json: ") for e in parsed.errors)
    good = parse_text("good.json", SEEDS[0])
    render_all(merge({"fuzz.json": parsed, "good.json": good}, {}), CTX)


def test_ten_thousand_generated_inputs_never_crash_the_parser():
    accepted = 0
    for seed in range(10_000):
        text = generate(seed)
        try:
            through_the_pipeline(text)
        except Exception as exc:  # the test's whole point: nothing may escape
            raise AssertionError(f"seed {seed} crashed the parser with {exc!r}; input: {text[:300]!r}") from exc
        accepted += parse_text("f.json", text).ok
    # the generator reaches both sides: some inputs are valid configs, most are not
    assert 0 < accepted < 10_000
