"""Live changes in the fake hypervisor: the running instance's vCPUs, balloon and devices.

Held to libvirt by tests/adapters/test_hypervisor_contract.py (vCPUs and memory, on the
test driver) and tests/integration/test_live_contract.py (plugging and unplugging, on a
real QEMU guest: the test driver cannot plug devices).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from ..core.live_changes import live_idents
from ..core.spec import MemoryUnit
from ..errors import HotplugUnsupported, HypervisorError


def _running(dom: Any, name: str) -> ET.Element:
    if dom is None:
        raise HypervisorError(f"Domain not found: no domain with matching name '{name}'")
    if not dom.power.active or dom.live is None:
        raise HypervisorError("Requested operation is not valid: domain is not running")
    return dom.live


def kib_of(memory: ET.Element | None) -> int:
    """A <memory> or <currentMemory> element's amount in KiB, whatever its unit."""
    if memory is None or not memory.text:
        return 0
    return int(memory.text) * MemoryUnit(memory.get("unit", "KiB")).bytes_per_unit // 1024


def set_vcpus(dom: Any, name: str, count: int) -> None:
    live = _running(dom, name)
    vcpu = live.find("vcpu")
    most = int(vcpu.text) if vcpu is not None and vcpu.text else 1
    if count > most:
        raise HypervisorError(f"invalid argument: requested vcpus is greater than max allowable vcpus for the "
                              f"live domain: {count} > {most}")
    if vcpu is not None:
        vcpu.set("current", str(count))


def set_memory(dom: Any, name: str, kib: int) -> None:
    live = _running(dom, name)
    most = kib_of(live.find("memory"))
    if kib > most:
        raise HypervisorError("invalid argument: cannot set memory higher than max memory")
    current = live.find("currentMemory")
    if current is None:
        current = ET.SubElement(live, "currentMemory")
    current.text, current.attrib = str(kib), {"unit": "KiB"}


def attach(dom: Any, name: str, xml: str, ident: str, *, hotplug: bool) -> None:
    live = _running(dom, name)
    if not hotplug:
        raise HotplugUnsupported("this function is not supported by the connection driver: "
                                 "virDomainAttachDeviceFlags: devices are plugged at the next boot", delay=1.0)
    if ident in live_idents(live):
        return
    devices = live.find("devices")
    if devices is None:
        devices = ET.SubElement(live, "devices")
    devices.append(ET.fromstring(xml))


def detach(dom: Any, name: str, ident: str, *, hotplug: bool) -> bool:
    """Ask for the device to go; True when the guest released it at once (then it is gone)."""
    live = _running(dom, name)
    if not hotplug:
        raise HotplugUnsupported("this function is not supported by the connection driver: "
                                 "virDomainDetachDeviceAlias: devices are unplugged at the next boot", delay=1.0)
    devices = live.find("devices")
    for el in list(devices) if devices is not None else []:
        mac, alias = el.find("mac"), el.find("alias")
        if ((el.tag == "interface" and mac is not None and mac.get("address", "").lower() == ident)
                or (el.tag == "disk" and alias is not None and alias.get("name") == ident)):
            if not dom.releases_devices:
                return False  # a guest without an OS (or one that refuses) never lets go
            devices.remove(el)
            return True
    return False
