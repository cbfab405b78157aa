"""Guests' IP addresses, read when `nvirtd status` asks: part of the libvirt adapter.

Addresses change without any event (a DHCP lease renews, a guest adds an address),
so the daemon does not keep them: the status command reads them from libvirt itself,
read-only, for the running domains the status lists. Two sources, each named:

- `lease`: the libvirt network's DHCP leases (dnsmasq), for NICs on a libvirt network;
- `agent`: the QEMU guest agent, when the guest runs one and it answers (every NIC,
  bridged ones too); the loopback is left out. libvirt allows this only over a
  read-write connection, which the command opens when it may (it changes nothing).

A guest without an agent, or a driver without leases, simply has fewer addresses:
nothing here is an error except libvirt not answering at all within the timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import libvirt

from .hypervisor_threads import close_quietly, in_own_thread, register_event_loop

SOURCES = (("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
           ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT))
_FAMILY = {libvirt.VIR_IP_ADDR_TYPE_IPV4: "ipv4", libvirt.VIR_IP_ADDR_TYPE_IPV6: "ipv6"}


def addresses_of(dom: Any) -> dict[str, list[dict[str, Any]]]:
    """MAC -> [{"address": "10.0.0.5/24", "family": "ipv4", "source": "lease"}], each address once."""
    found: dict[str, list[dict[str, Any]]] = {}
    for source, flag in SOURCES:
        try:
            interfaces = dom.interfaceAddresses(flag)
        except libvirt.libvirtError:
            continue  # no agent in the guest, no leases on this driver, or the guest just stopped
        for name, iface in (interfaces or {}).items():
            mac = (iface.get("hwaddr") or "").lower()
            if name == "lo" or not mac or mac == "00:00:00:00:00:00":
                continue
            known = found.setdefault(mac, [])
            for addr in iface.get("addrs") or []:
                text = f"{addr.get('addr')}/{addr.get('prefix')}"
                if all(a["address"] != text for a in known):
                    known.append({"address": text, "family": _FAMILY.get(addr.get("type"), "other"),
                                  "source": source})
    return found


def _read(uri: str, names: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    # libvirt asks the guest agent only over a read-write connection; nothing here writes
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        conn = libvirt.openReadOnly(uri)  # not root: the leases, still
    try:
        result = {}
        for name in names:
            try:
                dom = conn.lookupByName(name)
                if dom.isActive() == 1:
                    result[name] = addresses_of(dom)
            except libvirt.libvirtError:
                continue  # gone or stopped since the status was written
        return result
    finally:
        close_quietly([conn])


async def guest_addresses(uri: str, names: list[str], *,
                          timeout: float = 5.0) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each running domain's addresses by MAC; TimeoutError if libvirt does not answer in time."""
    register_event_loop()  # keepalive and close callbacks need libvirt's event loop
    return await in_own_thread(lambda: _read(uri, names), timeout=timeout, name="libvirt-addresses")


def read_guest_addresses(uri: str, names: list[str], *,
                         timeout: float = 5.0) -> dict[str, dict[str, list[dict[str, Any]]]]:
    return asyncio.run(guest_addresses(uri, names, timeout=timeout))
