"""libvirt lifecycle events -> queue keys. No decisions: the reconciler makes them."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import structlog

from ..adapters.hypervisor import Hypervisor
from ..runtime.expectations import Expectations

log = structlog.get_logger("nvirtd.events")


def wire(hv: Hypervisor, enqueue: Callable[[Hashable], None], on_lost: Callable[[str], None],
         expectations: Expectations | None = None) -> None:
    def domain_event(name: str, event: str) -> None:
        log.debug("libvirt_domain_event", domain=name, lifecycle=event)
        enqueue(("domain", name))

    if expectations is not None:  # runs in libvirt's event thread, before the hop to the loop
        hv.event_filter = lambda name, event: expectations.consume(("domain", name), event)

    def network_event(name: str) -> None:
        log.debug("libvirt_network_event", network=name)
        enqueue(("network", name))

    hv.on_domain_event = domain_event
    hv.on_network_event = network_event
    hv.on_close = on_lost
