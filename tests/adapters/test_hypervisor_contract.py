"""One contract, two hypervisors: libvirt's test driver and the in-memory fake.

Every test here runs against both. The fake stands in for libvirt in deterministic
tests and the simulator only as far as this suite holds it to the real driver:
definitions and their metadata, the running instance's own metadata, fingerprints,
persistent vs transient, changes through the handle of the last look (a foreign
domain that took the name is never touched), events, refusals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import xml.etree.ElementTree as ET

import libvirt
import pytest

from daemon.adapters.fake_hypervisor import FakeHypervisor
from daemon.adapters.hypervisor import Hypervisor
from daemon.adapters.hypervisor_protocol import (DefineDomain, Destroy, EventSink, MarkShutdown, SetAutostart, SetOwner,
                                                 Start, Undefine)
from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.network_xml import render_network
from daemon.core.observed import DomainEvent, Power
from daemon.core.ownership import Owner
from daemon.core.spec import Domain, Network, VirtType
from daemon.errors import HypervisorError
from tests.conftest import TEST_URI

CTX = RenderContext(VirtType.kvm, "/img", "/state", instance="contract")


def rendered(name: str = "c1", memory: int = 128, **spec):
    return render_domain(name, Domain.model_validate({"memory": {"amount": memory, "unit": "MiB"}, **spec}), CTX,
                         source_file="c.json")


def owner_of(d) -> Owner:
    return d.owner


class Outside:
    """What an administrator does meanwhile, with virsh: on the test driver through
    the test's own connection, on the fake through its out-of-band methods."""

    def __init__(self, hv, conn) -> None:
        self.hv, self.conn = hv, conn

    def define_foreign(self, name: str) -> None:
        xml = f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>"
        if self.conn is not None:
            self.conn.defineXML(xml)
        else:
            self.hv.oob_define(xml)

    def undefine(self, name: str) -> None:
        if self.conn is not None:
            dom = self.conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        else:
            self.hv.oob_undefine(name)

    def edit(self, name: str) -> None:
        """virsh edit: the same domain, another definition (our metadata kept)."""
        if self.conn is not None:
            root = ET.fromstring(self.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            root.find("memory").text = str(int(root.find("memory").text) * 2)
            self.conn.defineXML(ET.tostring(root, encoding="unicode"))
        else:
            dom = self.hv._by_name(name)
            dom.config.find("memory").text = str(int(dom.config.find("memory").text) * 2)


@pytest.fixture(params=["test-driver", "fake"])
async def world(request, fresh_libvirt):
    hv = Hypervisor(TEST_URI) if request.param == "test-driver" else FakeHypervisor()
    events: list[tuple[str, str]] = []
    hv.subscribe(EventSink(domain=lambda name, event: events.append((name, event))))
    await hv.connect()
    yield hv, Outside(hv, fresh_libvirt if request.param == "test-driver" else None), events
    await hv.close()
    hv.shutdown_pool()


async def settle():
    for _ in range(5):
        await asyncio.sleep(0.02)


async def test_define_records_the_owner_with_libvirts_fingerprint(world):
    hv, _, _ = world
    d = rendered()
    await hv.apply("c1", [DefineDomain(d.xml, owner_of(d))])
    seen = await hv.observe_domain("c1")
    assert seen.owned and seen.persistent and seen.power == Power.shutoff and not seen.autostart
    assert seen.owner.instance == "contract" and seen.owner.spec_hash == d.spec_hash
    assert seen.owner.fingerprint == seen.fingerprint
    assert seen.uuid == d.uuid and seen.live_spec_hash is None and seen.live_owner is None


async def test_the_running_instance_keeps_the_definition_it_started_with(world):
    hv, _, _ = world
    d1 = rendered()
    await hv.apply("c1", [DefineDomain(d1.xml, owner_of(d1)), SetAutostart(True), Start()])
    seen = await hv.observe_domain("c1")
    assert seen.power == Power.running and seen.autostart and seen.live_spec_hash == d1.spec_hash
    d2 = rendered(memory=256)
    await hv.apply("c1", [DefineDomain(d2.xml, owner_of(d2)), Start()])  # already running: done
    seen = await hv.observe_domain("c1")
    assert seen.owner.spec_hash == d2.spec_hash and seen.live_spec_hash == d1.spec_hash
    assert seen.owner.fingerprint == seen.fingerprint and seen.autostart


async def test_a_guest_without_an_agent_does_not_answer_and_a_stopped_one_neither(world):
    """startAfterAgent's question: the test driver has no guest agent (libvirt refuses the
    command), nor has the fake's guest unless told; neither answers once stopped."""
    hv, _, _ = world
    d = rendered()
    await hv.apply("c1", [DefineDomain(d.xml, owner_of(d)), Start()])
    await hv.observe_domain("c1")
    assert await hv.agent_answers("c1") is False
    await hv.apply("c1", [Destroy()])
    await hv.observe_domain("c1")
    assert await hv.agent_answers("c1") is False


async def test_an_edit_behind_our_back_changes_the_fingerprint(world):
    hv, outside, _ = world
    d = rendered()
    await hv.apply("c1", [DefineDomain(d.xml, owner_of(d))])
    outside.edit("c1")
    seen = await hv.observe_domain("c1")
    assert seen.owned and seen.owner.fingerprint != seen.fingerprint


async def test_metadata_updates_change_neither_the_definition_nor_the_other_half(world):
    hv, _, _ = world
    d = rendered()
    await hv.apply("c1", [DefineDomain(d.xml, owner_of(d)), Start()])
    before = await hv.observe_domain("c1")
    await hv.apply("c1", [SetOwner(dataclasses.replace(before.owner, shutdown_timeout=600)),
                          MarkShutdown(dataclasses.replace(before.live_owner, shutdown_started=1234.5))])
    seen = await hv.observe_domain("c1")
    assert seen.owner.shutdown_timeout == 600 and seen.fingerprint == before.fingerprint
    assert seen.live_owner.shutdown_started == 1234.5 and seen.live_spec_hash == d.spec_hash
    assert seen.owner.shutdown_started is None
    await hv.apply("c1", [Destroy()])
    seen = await hv.observe_domain("c1")
    assert seen.power == Power.shutoff and seen.live_owner is None and seen.owner.shutdown_timeout == 600


async def test_undefining_a_running_domain_leaves_it_running_transient_until_it_stops(world):
    hv, _, _ = world
    d = rendered()
    await hv.apply("c1", [DefineDomain(d.xml, owner_of(d)), Start()])
    await hv.observe_domain("c1")
    await hv.apply("c1", [Undefine()])
    seen = await hv.observe_domain("c1")
    assert seen is not None and seen.power == Power.running and not seen.persistent and not seen.autostart
    await hv.apply("c1", [Destroy()])
    assert await hv.observe_domain("c1") is None
    with pytest.raises(HypervisorError, match="changed since it was looked at"):
        await hv.apply("c1", [Destroy()])  # no look, no change: not even to nothing


async def test_changes_go_to_the_domain_looked_at_never_to_a_foreign_one_that_took_its_name(world):
    hv, outside, _ = world
    d = rendered()
    await hv.apply("c1", [DefineDomain(d.xml, owner_of(d))])
    assert (await hv.observe_domain("c1")).owned
    outside.undefine("c1")
    outside.define_foreign("c1")
    await hv.apply("c1", [Destroy(), Undefine()])  # ours is gone: done, and nothing else
    with pytest.raises(HypervisorError):
        await hv.apply("c1", [Start()])
    seen = await hv.observe_domain("c1")
    assert seen is not None and not seen.owned, "the foreign domain was undefined"
    assert seen.power == Power.shutoff


async def test_lifecycle_events_arrive_after_the_call_and_can_be_filtered(world):
    hv, outside, events = world
    hv.events.drop = lambda name, event: event == DomainEvent.defined  # an expectation
    d = rendered()
    await hv.apply("c1", [DefineDomain(d.xml, owner_of(d)), Start()])
    await settle()
    mine = [e for n, e in events if n == "c1"]
    assert "defined" not in mine and "started" in mine
    events.clear()
    await hv.observe_domain("c1")
    outside.undefine("c1")
    await settle()
    assert ("c1", "stopped") in events and ("c1", "undefined") in events


async def test_the_listings_early_looks_equal_looks_of_their_own_until_something_happens(world):
    """list_domains(look_at_each=True) looks at every domain at once, for the first look
    at each: what that look returns is what a look of its own would, and an edit behind
    our back after the listing is seen by the next look, not the listing's."""
    hv, outside, _ = world
    for name in ("c1", "c2"):
        d = rendered(name)
        await hv.apply(name, [DefineDomain(d.xml, owner_of(d)), Start()])
    await hv.settle()
    assert {"c1", "c2"} <= set(await hv.list_domains(look_at_each=True))
    early = {name: await hv.observe_domain(name) for name in ("c1", "c2")}
    assert early == {name: await hv.observe_domain(name) for name in ("c1", "c2")}
    assert early["c1"].owned and early["c1"].owner.fingerprint == early["c1"].fingerprint
    await hv.list_domains(look_at_each=True)
    outside.edit("c2")
    await settle()  # its event reaches the adapter
    assert (await hv.observe_domain("c1")) == early["c1"]
    edited = await hv.observe_domain("c2")
    assert edited.fingerprint != early["c2"].fingerprint and edited.owner.fingerprint != edited.fingerprint


async def test_a_domain_name_cannot_be_defined_twice_with_two_uuids(world):
    hv, outside, _ = world
    outside.define_foreign("c2")
    d = rendered("c2")
    with pytest.raises(HypervisorError, match="already"):
        await hv.apply("c2", [DefineDomain(d.xml, owner_of(d))])
    assert not (await hv.observe_domain("c2")).owned


async def test_a_network_is_defined_owned_started_and_removed(world):
    hv, _, _ = world
    n = render_network("cnet", Network.model_validate({"ip": {"address": "10.99.0.1"}}), {}, source_file="c.json",
                       instance="contract")
    fp = await hv.define_network(n.xml)
    seen = await hv.observe_network("cnet")
    assert seen.owned and not seen.active and seen.owner.instance == "contract"
    assert seen.owner.fingerprint == fp == seen.fingerprint
    await hv.set_network_autostart("cnet", True)
    await hv.start_network("cnet", n.xml)
    seen = await hv.observe_network("cnet")
    assert seen.active and seen.autostart and seen.live_spec_hash == n.spec_hash
    await hv.destroy_network("cnet")
    await hv.undefine_network("cnet")
    assert await hv.observe_network("cnet") is None
