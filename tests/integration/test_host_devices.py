"""Host devices and tuning on the real libvirtd: what libvirt accepts, keeps and refuses.

These machines have no device to pass through and no hugepages reserved; what is tried
here is libvirt's own acceptance of the XML nvirtd writes (the golden files are also
checked with virt-xml-validate), that it stays free of drift, and that a start libvirt
cannot do ends in a clear status (its own words), not a hang or a retry storm.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.conftest import domain, write_json
from tests.engine.test_reconcile import wait_for

pytestmark = pytest.mark.integration

TUNED = dict(
    cpu={"amount": 2, "model": "host-model", "topology": {"sockets": 1, "cores": 2, "threads": 1},
         "pin": {"0": "0", "1": "1"}, "emulatorPin": "0-1"},
    memory={"amount": 256, "unit": "MiB", "hugepages": {}},
    numa=[{"cpus": "0", "memory": 128}, {"cpus": "1", "memory": 128}],
    hostdevs={"gpu": {"type": "pci", "address": "0000:65:00.0"},
              "key": {"type": "usb", "vendor": "0x1050", "product": "0x0407"}},
)


async def test_libvirt_keeps_the_devices_and_tuning_and_a_restart_sees_no_drift(dirs, system_settings, start_daemon,
                                                                                 system_conn):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-tuned": domain(state="stopped", **TUNED)}})
    d = await start_daemon(system_settings)
    root = ET.fromstring(system_conn.lookupByName("nvt-tuned").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    address = root.find("./devices/hostdev[@type='pci']/source/address")
    assert (address.get("bus"), address.get("slot"), address.get("function")) == ("0x65", "0x00", "0x0")
    assert root.find("./devices/hostdev[@type='usb']/source/vendor").get("id") == "0x1050"
    assert [p.get("cpuset") for p in root.findall("./cputune/vcpupin")] == ["0", "1"]
    assert root.find("./cputune/emulatorpin").get("cpuset") == "0-1"
    assert root.find("./memoryBacking/hugepages") is not None
    assert root.find("./cpu").get("mode") == "host-model" and len(root.findall("./cpu/numa/cell")) == 2
    assert d.entry("nvt-tuned").phase == "stopped"
    d.daemon.stop()
    await d.task
    d = await start_daemon(system_settings)
    assert d.hv.mutation_count == 0, d.hv.mutations  # libvirt's expansion of it is stable: no drift


async def test_a_device_this_host_cannot_pass_through_is_a_clear_error(dirs, system_settings, start_daemon,
                                                                       system_conn):
    write_json(dirs["config"] / "a.json", {"domains": {"nvt-gpu": domain(
        96, virtType="qemu", hostdevs={"gpu": {"type": "pci", "address": "0000:65:00.0"}})}})
    d = await start_daemon(system_settings)
    await wait_for(lambda: d.entry("nvt-gpu").error, 30, "the start's error")
    entry = d.entry("nvt-gpu")
    assert entry.phase == "error" or entry.phase == "defined", entry
    # libvirt's words: no VFIO here ("host doesn't support passthrough of host PCI devices"),
    # or, on a host with VFIO, the device that is not there
    assert "PCI" in entry.error or "pci" in entry.error, entry.error
    assert system_conn.lookupByName("nvt-gpu").isActive() == 0
