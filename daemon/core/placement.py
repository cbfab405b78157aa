"""Which host of a fleet a domain runs on: one config for every host, each daemon its share.

PURE: standard library only.

A domain may say `host: "h2"`. Every host gets the whole fleet's files; the daemon of
host h1 (`nvirtd run --host h1`, default: the host name) manages the domains placed on
h1. A config that places no domain at all is one host's: every domain is its own. Once
any domain names a host, the config is a fleet's, and a domain without `host` is placed
nowhere (every host would run it otherwise: split brain on its disks).

A domain placed elsewhere is neither started nor removed here: if this host has it (it
ran here before its `host` changed), it is left as it is and the status says where it
belongs. And before a daemon first defines a domain placed on its host, it asks the
other hosts (`--peer`) whether one still holds it (adapters/hypervisor_fleet.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

UNPLACED = ""  # where a fleet's domain that names no host is placed


def is_fleet(domains: Mapping[str, Any]) -> bool:
    return any(d.spec.host for d in domains.values())


def is_me(where: str, host: str) -> bool:
    """Whether a domain placed on `where` is this host's: its name, or its name's first label
    (a config says "h1" where the host name is h1.example.com)."""
    return bool(where) and where in (host, host.split(".", 1)[0])


def placed_elsewhere(domains: Mapping[str, Any], host: str) -> dict[str, str]:
    """name -> where it is placed, for each declared domain that is not this host's."""
    if not is_fleet(domains):
        return {}
    return {name: d.spec.host or UNPLACED for name, d in domains.items() if not is_me(d.spec.host or UNPLACED, host)}


def drained(domains: Mapping[str, Any], host: str, peers: Collection[str]) -> tuple[dict[str, str], set[str]]:
    """While this host is drained (`nvirtd drain`): (each of its domains that goes to another
    host -> the first of its `hosts` that is a peer, the domains it stops instead). A domain
    with neither stays."""
    moves, stops = {}, set()
    for name, d in domains.items():
        if not is_me(d.spec.host or UNPLACED, host):
            continue
        if d.spec.evacuate == "stop":
            stops.add(name)
            continue
        alt = next((h for h in d.spec.hosts if h in peers), None)
        if alt is not None:
            moves[name] = alt
    return moves, stops


def describe(where: str) -> str:
    if where == UNPLACED:
        return "placed on no host: other domains of this fleet's config name their host, so give it `host`"
    return f"placed on host {where!r}; not managed here"


def held_message(holders: tuple[str, ...], every: float = 30.0) -> str:
    return (f"not defined here while {' and '.join(holders)} may hold it (a VM whose host changed runs where it "
            f"was, on its own disks; a running one moves here by itself); looked at again every {every:g} s")
