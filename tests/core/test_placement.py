"""Placement in a fleet's config, as a table: whose domain is it, and what a host does with
one placed elsewhere."""

from __future__ import annotations

from types import SimpleNamespace

from daemon.core import placement
from daemon.core.config import parse_text
from daemon.core.plan import Condition, Phase
from daemon.core.record import Wanted


def declared(**hosts):
    return {name: SimpleNamespace(spec=SimpleNamespace(host=host)) for name, host in hosts.items()}


def test_a_config_that_places_nothing_is_one_hosts():
    assert placement.placed_elsewhere(declared(a=None, b=None), "h1") == {}


def test_in_a_fleets_config_each_host_has_its_own_and_the_unplaced_are_nobodys():
    domains = declared(a="h1", b="h2", c=None)
    assert placement.placed_elsewhere(domains, "h1") == {"b": "h2", "c": placement.UNPLACED}
    assert placement.placed_elsewhere(domains, "h2") == {"a": "h1", "c": placement.UNPLACED}
    assert "give it `host`" in placement.describe(placement.UNPLACED)


def test_a_short_name_in_the_config_is_the_host_of_that_full_name():
    domains = declared(a="h1", b="h1.example.com", c="h2")
    assert placement.placed_elsewhere(domains, "h1.example.com") == {"c": "h2"}
    assert placement.placed_elsewhere(domains, "h1") == {"b": "h1.example.com", "c": "h2"}


def test_a_domain_placed_elsewhere_is_neither_started_nor_removed_here():
    from daemon.core.domain_plan import plan_domain
    from daemon.core.observed import DomainObservation, Power
    from daemon.core.record import Now, Record
    from tests.core.test_plan import D, observed
    wanted = Wanted("vm", D, "vm.json", elsewhere="h2", host="h1")
    for power, phase in ((Power.running, Phase.running), (Power.shutoff, Phase.stopped)):
        kept = plan_domain(wanted, DomainObservation(observed(power=power)), Record(), Now(0, 0))
        assert kept.actions == () and kept.phase == phase and Condition.elsewhere in kept.conditions
    absent = plan_domain(wanted, DomainObservation(None), Record(), Now(0, 0))
    assert absent.actions == () and absent.phase == Phase.removed


def test_a_host_name_is_checked():
    parsed = parse_text("f.json", '{"domains": {"a": {"host": "h 1", "memory": {"amount": 1, "unit": "GiB"}}}}')
    assert not parsed.ok and parsed.errors[0].path == "domains.a.host"
