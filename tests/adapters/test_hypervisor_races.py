"""The adapter while a domain changes under us, on libvirt's test driver.

nvirtd defines "web" once; then the daemon stops and the test drives an adapter of
its own, changing the domain with its own connection (as virsh would) between the
adapter's look and its change. The errors that follow are the test driver's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import libvirt
import pytest

from daemon.adapters.hypervisor import Hypervisor
from daemon.adapters.hypervisor_listing import Listing
from daemon.adapters.hypervisor_protocol import Start, Undefine
from daemon.core.observed import Power
from daemon.errors import HypervisorError
from tests.conftest import TEST_URI, domain, write_json


@pytest.fixture
def adapter_after(dirs, settings, start_daemon):
    """An adapter of our own, once nvirtd has set up {"web": spec} and stopped."""
    @contextlib.asynccontextmanager
    async def make(**spec):
        write_json(dirs["config"] / "a.json", {"domains": {"web": domain(**spec)}})
        d = await start_daemon(settings)
        d.daemon.stop()
        await d.task
        hv = Hypervisor(TEST_URI)
        await hv.connect()
        try:
            yield hv
        finally:
            await hv.close()
    return make


class StopsAfterStateRead:
    """A real handle, except that reading its state also stops the domain: the race
    between two reads of one look, hit every time."""

    def __init__(self, dom):
        self._dom = dom

    def state(self):
        now = self._dom.state()
        self._dom.destroy()
        self.state = self._dom.state  # only the first look races
        return now

    def __getattr__(self, attr):
        return getattr(self._dom, attr)


async def test_a_domain_that_stops_mid_observation_is_seen_stopped(adapter_after, fresh_libvirt):
    async with adapter_after() as hv:
        assert fresh_libvirt.lookupByName("web").state()[0] == libvirt.VIR_DOMAIN_RUNNING
        hv._doms["web"] = StopsAfterStateRead(fresh_libvirt.lookupByName("web"))
        observed = await hv.observe_domain("web")
        assert observed is not None and observed.power == Power.shutoff
        assert observed.live_spec_hash is None and observed.owned


async def test_starting_a_domain_someone_else_just_started_is_not_an_error(adapter_after, fresh_libvirt):
    async with adapter_after(state="stopped") as hv:
        assert (await hv.observe_domain("web")).power == Power.shutoff
        fresh_libvirt.lookupByName("web").create()  # virsh start, between our look and our start
        await hv.apply("web", [Start()])
        assert fresh_libvirt.lookupByName("web").isActive() == 1


FOREIGN_UUID = "0b2c6a1e-3f1d-4c11-9d3e-5a7f00c0ffee"
FOREIGN = f"""<domain type='test'><name>web</name><uuid>{FOREIGN_UUID}</uuid>
<memory>65536</memory><os><type>hvm</type></os></domain>"""


async def test_a_change_never_reaches_a_foreign_domain_that_took_the_name(adapter_after, fresh_libvirt):
    async with adapter_after(state="stopped") as hv:
        assert (await hv.observe_domain("web")).owned
        # between our look and our change, ours is undefined and someone else's defined as "web"
        fresh_libvirt.lookupByName("web").undefine()
        fresh_libvirt.defineXML(FOREIGN)
        await hv.apply("web", [Undefine()])  # ours is gone: done
        with pytest.raises(HypervisorError):
            await hv.apply("web", [Start()])  # ours is gone: look again
        foreign = fresh_libvirt.lookupByName("web")
        assert foreign.UUIDString() == FOREIGN_UUID and foreign.isActive() == 0


async def test_a_look_takes_the_listings_facts_once_and_never_after_a_change(adapter_after, fresh_libvirt):
    """The first look after a listing takes power, persistence and autostart from it (3
    RPCs fewer); anything that happens to the domain since drops them: the look is fresh."""
    async with adapter_after(state="stopped") as hv:
        await hv.list_domains()
        calls = hv.calls
        seen = await hv.observe_domain("web")
        assert seen.power == Power.shutoff and seen.persistent and not seen.autostart
        assert hv.calls == calls + 1 and hv._listing.facts_of("web") is None
        assert await hv.observe_domain("web") == seen  # the same, from RPCs of its own
        await hv.list_domains()
        fresh_libvirt.lookupByName("web").create()  # virsh start, after the listing
        for _ in range(20):  # its event reaches the adapter
            await asyncio.sleep(0.01)
        assert (await hv.observe_domain("web")).power == Power.running, "not the listing's stale shutoff"


async def test_an_early_look_is_used_once_without_a_call_and_never_after_a_change(adapter_after, fresh_libvirt):
    """The listing's look at each domain serves the first look at it (no call of its
    own); a change of ours since drops it, and so does virsh's, once its event is in."""
    async with adapter_after(state="stopped") as hv:
        await hv.list_domains(look_at_each=True)
        calls = hv.calls
        seen = await hv.observe_domain("web")
        assert seen.power == Power.shutoff and seen.owned and hv.calls == calls
        assert await hv.observe_domain("web") == seen and hv.calls == calls + 1  # its own, the same
        await hv.list_domains(look_at_each=True)
        await hv.apply("web", [Start()])
        assert (await hv.observe_domain("web")).power == Power.running, "not the early look's shutoff"
        await hv.list_domains(look_at_each=True)
        fresh_libvirt.lookupByName("web").destroy()  # virsh destroy, after the listing
        for _ in range(20):  # its event reaches the adapter
            await asyncio.sleep(0.01)
        assert (await hv.observe_domain("web")).power == Power.shutoff, "not the early look's running"


def test_a_look_stored_after_an_event_or_a_newer_listing_is_not_kept():
    """The race of an early look's thread with libvirt's event thread: the look was read
    before the event, and is stored after it. And a listing's looks outliving the next."""
    seen = object()
    listing = Listing()
    generation = listing.begin()
    assert listing.install({}, generation) == set()
    assert listing.wants_look("web", generation)
    listing.forget("web")  # the event, between the read and the store
    listing.keep_look("web", seen, generation)
    assert not listing.wants_look("web", generation) and listing.take_look("web") is None
    listing.keep_look("db", seen, generation)
    assert listing.take_look("db") is seen and listing.take_look("db") is None  # used once
    old, newer = generation, listing.begin()
    listing.keep_look("app", seen, old)  # a job of the older listing, still running
    assert listing.wants_look("app", newer) and listing.take_look("app") is None


def test_an_event_during_the_listing_drops_the_listings_facts_of_that_domain():
    """The listing's RPCs run in the pool while libvirt's event thread goes on: a domain
    that stopped between them and the facts' store is not taken for running."""
    listing = Listing()
    generation = listing.begin()
    listing.forget("web")  # its event, while the listing's RPCs run
    touched = listing.install({"web": (Power.running, True, True), "db": (Power.shutoff, True, False)}, generation)
    assert listing.facts_of("web") is None and listing.facts_of("db") == (Power.shutoff, True, False)
    assert touched == {"web"}, "a name an event brought is known, even if the listing missed it"
    stale = listing.begin()
    listing.install({"app": (Power.running, True, True)}, generation)  # an older listing, ending late
    assert listing.facts_of("app") is None and stale == generation + 1


class StartsAfterShutoffListing:
    """A real connection, except that right after the listing of shut-off domains, "web"
    is started (virsh start) and its event is let in: the race between the listing's
    RPCs and libvirt's event thread, hit every time."""

    def __init__(self, conn, outside, hv):
        self._conn, self._outside, self._hv, self._done = conn, outside, hv, False

    def listAllDomains(self, flags=0):
        listed = self._conn.listAllDomains(flags)
        if flags == libvirt.VIR_CONNECT_LIST_DOMAINS_SHUTOFF and not self._done:
            self._done = True
            self._outside.lookupByName("web").create()
            deadline = time.monotonic() + 5
            while "web" not in self._hv._listing._spent and time.monotonic() < deadline:
                time.sleep(0.01)  # its event, in libvirt's event thread
        return listed

    def __getattr__(self, attr):
        return getattr(self._conn, attr)


async def test_a_domain_started_while_the_listing_runs_is_not_taken_for_stopped(adapter_after, fresh_libvirt):
    async with adapter_after(state="stopped") as hv:
        real = hv._c
        racing = StartsAfterShutoffListing(real(), fresh_libvirt, hv)
        hv._c = lambda: racing
        await hv.list_domains(look_at_each=True)
        hv._c = real
        assert (await hv.observe_domain("web")).power == Power.running, "the listing's stale 'shut off'"
