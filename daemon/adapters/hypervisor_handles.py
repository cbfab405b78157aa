"""Changes go to the object the pipeline looked at, never to whatever has its name now.

A libvirt handle (virDomain, virNetwork) names its object by UUID. The adapter caches
the handle each look takes, and every change is made through that cached handle: if
nvirtd's object was undefined and a foreign one took the name in between, the change
finds ours gone instead of reaching the foreign one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from ..errors import HypervisorError

T = TypeVar("T")


def through_cached(cache: dict[str, Any], kind: str, name: str, fn: Callable[[Any], T], *,
                   gone_code: int, gone_is_done: bool = False) -> T | None:
    """fn(the cached handle of `name`). Its object gone: None with gone_is_done (there
    is nothing left to stop or undefine), else the error, so that the caller looks again."""
    handle = cache.get(name)
    if handle is None:
        raise HypervisorError(f"{kind} {name!r} changed since it was looked at; looking again")
    try:
        return fn(handle)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != gone_code:
            raise
        # the stale handle stays: the next change through it finds the same; the next look replaces it
        if gone_is_done:
            return None
        raise
