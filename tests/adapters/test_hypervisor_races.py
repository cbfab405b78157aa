"""The adapter while a domain changes under us, on libvirt's test driver.

A guest can stop between two of the reads that make one observation (its state,
then its live metadata). The race is real; to hit it every time, the domain
handle is wrapped so that the real domain is destroyed right after its state was
read. Nothing else is faked: the error that follows is the test driver's own.
"""

from __future__ import annotations

import libvirt
import pytest

from daemon.adapters.hypervisor import Hypervisor
from daemon.errors import HypervisorError
from daemon.core.observed import Power
from tests.conftest import TEST_URI, domain, write_json


class StopsAfterStateRead:
    def __init__(self, dom):
        self._dom = dom

    def state(self):
        now = self._dom.state()
        self._dom.destroy()
        self.state = self._dom.state  # only the first look races
        return now

    def __getattr__(self, attr):
        return getattr(self._dom, attr)


async def test_a_domain_that_stops_mid_observation_is_seen_stopped(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    d = await start_daemon(settings)
    assert fresh_libvirt.lookupByName("web").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    d.daemon.stop()  # only an adapter of our own is used from here on
    await d.task
    hv = Hypervisor(TEST_URI)
    await hv.connect()
    try:
        hv._doms["web"] = StopsAfterStateRead(fresh_libvirt.lookupByName("web"))
        observed = await hv.observe_domain("web")
        assert observed is not None and observed.power == Power.shutoff
        assert observed.live_spec_hash is None and observed.owned
    finally:
        await hv.close()


async def test_starting_a_domain_someone_else_just_started_is_not_an_error(dirs, settings, start_daemon,
                                                                          fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(state="stopped")}})
    d = await start_daemon(settings)
    d.daemon.stop()
    await d.task
    hv = Hypervisor(TEST_URI)
    await hv.connect()
    try:
        assert (await hv.observe_domain("web")).power == Power.shutoff
        fresh_libvirt.lookupByName("web").create()  # virsh start, between our look and our start
        await hv.apply("web", [("start", None)])
        assert fresh_libvirt.lookupByName("web").isActive() == 1
    finally:
        await hv.close()


FOREIGN = """<domain type='test'><name>web</name><uuid>0b2c6a1e-3f1d-4c11-9d3e-5a7f00c0ffee</uuid>
<memory>65536</memory><os><type>hvm</type></os></domain>"""


async def test_a_change_never_reaches_a_foreign_domain_that_took_the_name(dirs, settings, start_daemon,
                                                                           fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(state="stopped")}})
    d = await start_daemon(settings)
    d.daemon.stop()
    await d.task
    hv = Hypervisor(TEST_URI)
    await hv.connect()
    try:
        assert (await hv.observe_domain("web")).owned
        # between our look and our change, ours is undefined and someone else's defined as "web"
        fresh_libvirt.lookupByName("web").undefine()
        fresh_libvirt.defineXML(FOREIGN)
        await hv.apply("web", [("undefine", None)])  # ours is gone: done
        with pytest.raises(HypervisorError):
            await hv.apply("web", [("start", None)])  # ours is gone: look again
        foreign = fresh_libvirt.lookupByName("web")
        assert foreign.UUIDString() == "0b2c6a1e-3f1d-4c11-9d3e-5a7f00c0ffee" and foreign.isActive() == 0
        assert hv.mutations["undefine"] == 1  # counted as attempted, but nothing foreign was touched
    finally:
        await hv.close()
