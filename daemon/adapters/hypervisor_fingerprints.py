"""Fingerprints recorded after the starts: part of the libvirt adapter (hypervisor.py).

A define is three RPCs: `defineXML`, the read-back of what libvirt stored (its
fingerprint), and the `setMetadata` that records that fingerprint in the owner
element, which makes libvirt write the domain's config file a second time. The
read-back stays right after the define, as before, so the fingerprint is of exactly
what we defined; only the record waits. In a burst (a cold start, a boot storm) that
is one call in four, and one config write in two, between process start and the last
guest running. The record is written when the adapter has had no change in flight
for a moment, or at the latest before anything looks at that domain or changes it:

- every look (`observe_domain`) and every change (`apply`) of a domain settles its
  pending record first, in the same thread job, so no observation ever sees a domain
  of ours without its fingerprint (which would read as drift and redefine it), and an
  edit made behind our back in the meantime still shows as drift;
- a record that another thread is writing is waited for, never written twice;
- the daemon settles all of them before READY=1 and before it closes the connections,
  so a restart finds every fingerprint in place (0 mutating calls);
- a record that fails stays pending: the next look of that domain tries again and
  reports the error like any other; a domain that is gone needs none.

The autostart flag of a domain just defined waits with its record, for the same
reason (one call in four of a cold start; libvirt writes a link for it): it matters
when the host boots without nvirtd, and READY=1 comes after it. Until then any look at
the domain writes it first; if nvirtd is killed before, the next start finds autostart
off and sets it, a repair like any other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from ..core.ownership import NAMESPACE, PREFIX, Owner, fingerprint, owner_xml

SETTLE_WAIT_SECONDS = 60.0  # a record another thread writes; libvirt calls have no timeout of their own


def read_fingerprint(dom: Any) -> str:
    """The fingerprint of what libvirt stored (read right after the define)."""
    return fingerprint(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def record_owner(dom: Any, owner: Owner) -> None:
    """The owner element, fingerprint included, in the persistent definition."""
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, owner_xml(owner), PREFIX, NAMESPACE,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG)


class PendingFingerprints:
    """Thread-safe: defines add from the pool's threads, looks and the flush settle."""

    def __init__(self, record: Callable[[Any, Owner], None] = record_owner) -> None:
        self._record = record
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Any, Owner, bool | None]] = {}  # name -> (handle, owner, autostart)
        self._writing: dict[str, threading.Event] = {}
        self._generation = 0  # a clear() (the connection went) makes older records void

    def __len__(self) -> int:
        return len(self._pending)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def add(self, name: str, dom: Any, owner: Owner) -> None:
        """`owner` carries the fingerprint already; what waits is writing it."""
        with self._lock:
            self._pending[name] = (dom, owner, None)

    def add_autostart(self, name: str, on: bool) -> bool:
        """Let the autostart flag of a domain whose record waits be set with it; False when
        none waits (the flag is then set at once)."""
        with self._lock:
            item = self._pending.get(name)
            if item is None:
                return False
            self._pending[name] = (item[0], item[1], on)
            return True

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._generation += 1

    def settle(self, name: str) -> None:
        """Write `name`'s pending record, or wait for the thread writing it (in a pool thread)."""
        with self._lock:
            item = self._pending.pop(name, None)
            writing = self._writing.get(name)
            generation = self._generation
            if item is not None:
                writing = self._writing[name] = threading.Event()
                mine = True
            else:
                mine = False
        if not mine:
            if writing is not None:
                writing.wait(SETTLE_WAIT_SECONDS)
            return
        dom, owner, autostart = item
        try:
            self._record(dom, owner)
            if autostart is not None:
                dom.setAutostart(1 if autostart else 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # gone: nothing to record
                with self._lock:
                    if generation == self._generation:  # not through a connection closed meanwhile
                        self._pending.setdefault(name, item)  # a define since then supersedes it
                raise
        finally:
            with self._lock:
                self._writing.pop(name, None)
            writing.set()

    def settle_quietly(self, name: str) -> None:
        """For the background flush: a failure stays pending for the next look to report."""
        with contextlib.suppress(libvirt.libvirtError):
            self.settle(name)
