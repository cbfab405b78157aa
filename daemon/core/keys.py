"""What the queue carries: a kind of object and its name.

PURE: standard library only. A Key is a NamedTuple, so it hashes and compares like
the plain ("domain", "web") tuple the sources produced before it had a type.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Kind(StrEnum):
    domain = "domain"
    network = "network"


class Key(NamedTuple):
    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name}"


def domain(name: str) -> Key:
    return Key(Kind.domain, name)


def network(name: str) -> Key:
    return Key(Kind.network, name)
