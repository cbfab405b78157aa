"""libvirt networks: the network half of the Hypervisor adapter (see hypervisor.py).

Same rules: blocking calls run in the adapter's pool through `_run`, libvirtError is
translated there, mutations are counted.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from ..core.observed import ObservedNetwork
from ..core.ownership import NAMESPACE, fingerprint, parse_owner


def _network_inactive_xml(net: Any) -> str:
    """The persistent definition; the test driver has no INACTIVE flag for networks."""
    try:
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return net.XMLDesc(0)


def runs_on_this_host(uri: str) -> bool:
    """True when the guests' tap devices are this host's: a local qemu/lxc driver
    (qemu:///system, qemu+unix:///system), not a remote host nor the test driver."""
    parts = urllib.parse.urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    return driver in ("qemu", "lxc", "ch") and transport in ("", "unix") and not parts.hostname


class NetworkOps:
    """Mixed into Hypervisor, which provides _run, _c, _count."""

    _run: Any
    _c: Any
    _count: Any

    async def observe_network(self, name: str) -> ObservedNetwork | None:
        return await self._run(self._observe_network, name)

    def _observe_network(self, name: str) -> ObservedNetwork | None:
        try:
            net = self._c().networkLookupByName(name)
            active = net.isActive() == 1
            xml = _network_inactive_xml(net)
            owner = parse_owner(xml)
            live_hash = None
            if active and owner is not None:
                live_owner = parse_owner(net.XMLDesc(0))
                live_hash = live_owner.spec_hash if live_owner else ""
            persistent = net.isPersistent() == 1
            autostart = persistent and net.autostart() == 1
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise
        return ObservedNetwork(
            name=name, uuid=ET.fromstring(xml).findtext("uuid") or "", active=active, owner=owner,
            live_spec_hash=live_hash, fingerprint=fingerprint(xml), autostart=autostart, persistent=persistent,
        )

    # ---- network writes -------------------------------------------------------------
    async def define_network(self, xml: str) -> str:
        """Define and return the fingerprint; the owner element goes in with the XML itself.

        libvirt 9.0 has no virNetworkSetMetadata, so the fingerprint is recorded by
        defining a second time with it (libvirt's expansion is stable).
        """
        self._count("define_network")

        def define() -> str:
            conn = self._c()
            net = conn.networkDefineXML(xml)
            inactive = _network_inactive_xml(net)
            fp = fingerprint(inactive)
            root = ET.fromstring(inactive)
            owner = root.find(f"metadata/{{{NAMESPACE}}}owner")
            if owner is not None:
                owner.set("fingerprint", fp)
                conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
            return fp
        return await self._run(define)

    async def set_network_autostart(self, name: str, on: bool) -> None:
        self._count("set_network_autostart")
        await self._run(lambda: self._c().networkLookupByName(name).setAutostart(1 if on else 0))

    async def start_network(self, name: str) -> None:
        self._count("start_network")
        await self._run(lambda: self._c().networkLookupByName(name).create())

    async def destroy_network(self, name: str) -> None:
        self._count("destroy_network")
        await self._run(lambda: self._c().networkLookupByName(name).destroy())

    async def undefine_network(self, name: str) -> None:
        self._count("undefine_network")
        await self._run(lambda: self._c().networkLookupByName(name).undefine())

    async def network_taps(self, network: str) -> tuple[str, list[tuple[str, str]]]:
        """The network's bridge, and (domain, tap device) of every running NIC on it."""
        def scan() -> tuple[str, list[tuple[str, str]]]:
            bridge = self._c().networkLookupByName(network).bridgeName()
            taps = []
            for dom in self._c().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                root = ET.fromstring(dom.XMLDesc(0))
                for iface in root.findall("./devices/interface[@type='network']"):
                    source, target = iface.find("source"), iface.find("target")
                    if source is not None and source.get("network") == network and target is not None:
                        taps.append((dom.name(), target.get("dev", "")))
            return bridge, taps
        return await self._run(scan)
