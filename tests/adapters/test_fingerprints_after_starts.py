"""The libvirt adapter writes a define's fingerprint record after the starts
(hypervisor_fingerprints.py): what libvirt holds meanwhile, seen through a connection
of the test's own, and that nothing nvirtd looks at ever lacks it.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import libvirt
import pytest

from daemon.adapters.hypervisor import Hypervisor
from daemon.adapters.hypervisor_protocol import DefineDomain, SetAutostart, Start
from daemon.core.ownership import parse_owner
from tests.adapters.test_hypervisor_contract import rendered
from tests.conftest import TEST_URI


def recorded_fingerprint(conn, name: str) -> str | None:
    """The fingerprint in libvirt's persistent definition, read as virsh dumpxml would."""
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    owner = parse_owner(root)
    assert owner is not None, "the owner element goes in with the define itself"
    return owner.fingerprint


@pytest.fixture
async def hv(fresh_libvirt):
    hv = Hypervisor(TEST_URI)
    await hv.connect()
    yield hv
    await hv.close()
    hv.shutdown_pool()


async def test_the_guest_runs_before_its_record_is_written_and_a_look_writes_it(hv, fresh_libvirt):
    d = rendered("c1")
    hv._flush_when_idle = lambda: None  # no idle moment: only the look can write it
    await hv.apply("c1", [DefineDomain(d.xml, d.owner), SetAutostart(True), Start()])
    assert fresh_libvirt.lookupByName("c1").isActive() == 1
    assert recorded_fingerprint(fresh_libvirt, "c1") is None
    assert fresh_libvirt.lookupByName("c1").autostart() == 0  # waits with the record
    seen = await hv.observe_domain("c1")
    assert seen.owner.fingerprint == seen.fingerprint  # not drift, nothing to redefine
    assert seen.autostart  # nor a missing autostart to set again
    assert recorded_fingerprint(fresh_libvirt, "c1") == seen.fingerprint
    assert fresh_libvirt.lookupByName("c1").autostart() == 1


async def test_autostart_of_a_domain_defined_before_is_set_at_once(hv, fresh_libvirt):
    d = rendered("c1")
    hv._flush_when_idle = lambda: None
    await hv.apply("c1", [DefineDomain(d.xml, d.owner)])
    await hv.apply("c1", [SetAutostart(True)])  # its record went first (a change settles it)
    assert recorded_fingerprint(fresh_libvirt, "c1") is not None
    assert fresh_libvirt.lookupByName("c1").autostart() == 1


async def test_a_change_writes_the_pending_record_first(hv, fresh_libvirt):
    d = rendered("c1")
    hv._flush_when_idle = lambda: None
    await hv.apply("c1", [DefineDomain(d.xml, d.owner)])
    await hv.apply("c1", [Start()])
    assert recorded_fingerprint(fresh_libvirt, "c1") is not None


async def test_settle_writes_every_record_and_a_fresh_adapter_sees_no_drift(hv, fresh_libvirt):
    hv._flush_when_idle = lambda: None
    names = [f"c{i}" for i in range(30)]
    for name in names:
        d = rendered(name)
        await hv.apply(name, [DefineDomain(d.xml, d.owner), SetAutostart(True), Start()])
    assert all(recorded_fingerprint(fresh_libvirt, n) is None for n in names)
    await hv.settle()
    other = Hypervisor(TEST_URI)  # a restarted daemon
    await other.connect()
    try:
        for name in names:
            seen = await other.observe_domain(name)
            assert seen.owner.fingerprint == seen.fingerprint, name
            assert seen.autostart, name
    finally:
        await other.close()
        other.shutdown_pool()


async def test_an_idle_adapter_writes_the_records_on_its_own(hv, fresh_libvirt):
    for name in ("c1", "c2"):
        d = rendered(name)
        await hv.apply(name, [DefineDomain(d.xml, d.owner), Start()])
    for _ in range(100):
        if all(recorded_fingerprint(fresh_libvirt, n) for n in ("c1", "c2")):
            break
        await asyncio.sleep(0.01)
    assert recorded_fingerprint(fresh_libvirt, "c1") and recorded_fingerprint(fresh_libvirt, "c2")


async def test_an_edit_before_the_record_is_still_drift(hv, fresh_libvirt):
    """The fingerprint is read right after the define; only writing it waits."""
    d = rendered("c1")
    hv._flush_when_idle = lambda: None
    await hv.apply("c1", [DefineDomain(d.xml, d.owner)])
    root = ET.fromstring(fresh_libvirt.lookupByName("c1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    root.find("memory").text = str(int(root.find("memory").text) * 2)
    fresh_libvirt.defineXML(ET.tostring(root, encoding="unicode"))  # virsh edit
    seen = await hv.observe_domain("c1")
    assert seen.owner.fingerprint is not None and seen.owner.fingerprint != seen.fingerprint


def test_a_record_that_fails_stays_pending_but_not_past_a_reconnect():
    """Unit level (a mock: a failing setMetadata cannot be made on demand): the failure stays
    for the next look to report, unless the connection it was made through is gone."""
    import threading

    from daemon.adapters.hypervisor_fingerprints import PendingFingerprints
    from daemon.core.ownership import Owner

    failing = libvirt.libvirtError("refused")
    failing.err = (libvirt.VIR_ERR_INTERNAL_ERROR, 0, "refused", 0, "", "", "", 0, 0)
    release = threading.Event()

    def record(dom, owner):
        release.wait(5)
        raise failing
    pending = PendingFingerprints(record)
    owner = Owner("a.json", "h", "fp")
    pending.add("a", object(), owner)
    release.set()
    with pytest.raises(libvirt.libvirtError):
        pending.settle("a")
    assert pending.names() == ["a"]  # kept: the next look tries again and reports it

    release.clear()
    worker = threading.Thread(target=pending.settle_quietly, args=("a",))
    worker.start()
    pending.clear()  # the connection went while the record was being written
    release.set()
    worker.join(5)
    assert pending.names() == []  # its handle belonged to the old connection: dropped
