"""libvirt lifecycle events -> queue keys. No decisions: the plans make them."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from ..adapters.hypervisor_protocol import EventSink
from ..core.keys import Key, Kind
from ..core.observed import DomainEvent
from ..runtime.expectations import Expectations

log = structlog.get_logger("nvirtd.events")


def sink(enqueue: Callable[[Key], None], on_lost: Callable[[str], None],
         expectations: Expectations | None = None) -> EventSink:
    def domain_event(name: str, event: DomainEvent) -> None:
        log.debug("libvirt_domain_event", domain=name, lifecycle=event.value)
        enqueue(Key(Kind.domain, name))

    def network_event(name: str) -> None:
        log.debug("libvirt_network_event", network=name)
        enqueue(Key(Kind.network, name))

    def expected(name: str, event: DomainEvent) -> bool:  # runs in libvirt's event thread
        return expectations is not None and expectations.consume(Key(Kind.domain, name), event)

    return EventSink(domain=domain_event, network=network_event, closed=on_lost, drop=expected)
