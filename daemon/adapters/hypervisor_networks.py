"""libvirt networks: the network half of the Hypervisor adapter (see hypervisor.py).

Same rules: blocking calls run in the adapter's pool through `_run`, libvirtError is
translated there, mutations are counted.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from ..core.network_xml import StaticHost, static_hosts
from ..core.observed import NetworkLink, ObservedNetwork
from ..core.ownership import NAMESPACE, fingerprint, parse_owner
from .hostnet import GuestTap
from .hypervisor_handles import through_cached

T = TypeVar("T")


def _network_inactive_xml(net: Any) -> tuple[str, bool]:
    """The persistent definition, and whether it was told apart from the live one: the
    test driver has no INACTIVE flag for networks and shows the live definition."""
    try:
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE), True
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        return net.XMLDesc(0), False


_UPDATE_COMMANDS = {"delete": libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                    "add": libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST}
_UPDATE_SECTIONS = {"ip-dhcp-host": libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                    "dns-host": libvirt.VIR_NETWORK_SECTION_DNS_HOST}


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
    _nets: dict[str, Any]  # name -> the virNetwork handle of the last look

    def _on_observed_net(self, name: str, fn: Callable[[Any], T], *, gone_is_done: bool = False) -> T | None:
        return through_cached(self._nets, "network", name, fn, gone_code=libvirt.VIR_ERR_NO_NETWORK,
                              gone_is_done=gone_is_done)

    async def observe_network(self, name: str) -> ObservedNetwork | None:
        return await self._run(self._observe_network, name)

    def _observe_network(self, name: str) -> ObservedNetwork | None:
        try:
            net = self._nets[name] = self._c().networkLookupByName(name)
            active = net.isActive() == 1
            xml, apart = _network_inactive_xml(net)
            root = ET.fromstring(xml)
            owner = parse_owner(root)
            live_hash = live_restart = None
            live_hosts: frozenset[StaticHost] = frozenset()
            if active and owner is not None:
                live = ET.fromstring(net.XMLDesc(0))
                live_owner = parse_owner(live)
                live_hash = live_owner.spec_hash if live_owner else ""
                # an update in place is only seen as done where the persistent definition
                # can be read apart from the live one; elsewhere the network restarts
                live_restart = live_owner.restart_hash if live_owner and apart else None
                live_hosts = static_hosts(live)
            persistent = net.isPersistent() == 1
            autostart = persistent and net.autostart() == 1
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                self._nets.pop(name, None)
                return None
            raise
        return ObservedNetwork(
            name=name, uuid=root.findtext("uuid") or "", active=active, owner=owner,
            live_spec_hash=live_hash, fingerprint=fingerprint(xml), autostart=autostart, persistent=persistent,
            live_restart_hash=live_restart, live_hosts=live_hosts,
        )

    async def network_link(self, name: str) -> NetworkLink:
        """Whether a network a domain needs is up, and whose it is: the cheap look a
        domain takes before it starts (lookup, isActive, one XML read)."""
        return await self._run(self._network_link, name)

    def _network_link(self, name: str) -> NetworkLink:
        try:
            net = self._c().networkLookupByName(name)
            active = net.isActive() == 1
            owner = parse_owner(ET.fromstring(net.XMLDesc(0)))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return NetworkLink(name, active=False, instance=None)
            raise
        return NetworkLink(name, active=active, instance=owner.owned_by if owner is not None else None)

    # ---- network writes -------------------------------------------------------------
    async def define_network(self, xml: str) -> str:
        """Define and return the fingerprint; the owner element goes in with the XML itself.

        libvirt 9.0 has no virNetworkSetMetadata, so the fingerprint is recorded by
        defining a second time with it (libvirt's expansion is stable).
        """
        self._count("define_network")
        return await self._run(self._define_network, xml)

    def _define_network(self, xml: str) -> str:
        conn = self._c()
        net = conn.networkDefineXML(xml)
        self._nets[net.name()] = net
        inactive, apart = _network_inactive_xml(net)
        fp = fingerprint(inactive)
        # defined again as read back, which keeps what libvirt generated (the bridge's
        # MAC); but where that is the live definition (test driver, running network)
        # it would put the old one back: ours then, and start_network defines it again
        root = ET.fromstring(inactive if apart or not net.isActive() else xml)
        owner = root.find(f"metadata/{{{NAMESPACE}}}owner")
        if owner is not None:
            owner.set("fingerprint", fp)
            conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
        return fp

    async def set_network_autostart(self, name: str, on: bool) -> None:
        self._count("set_network_autostart")
        await self._run(lambda: self._on_observed_net(name, lambda net: net.setAutostart(1 if on else 0)))

    async def start_network(self, name: str, xml: str | None = None) -> None:
        """Start it; with `xml`, from that definition. libvirt's test driver drops a
        definition made while the network ran when it stops: it is made again here."""
        self._count("start_network")

        def start(net: Any) -> bool:
            redefine = False
            if xml is not None:
                held = parse_owner(_network_inactive_xml(net)[0])  # stopped: this is the persistent one
                wanted = parse_owner(xml)
                redefine = wanted is not None and (held is None or held.spec_hash != wanted.spec_hash)
                if redefine:
                    self._define_network(xml)
            net.create()
            return redefine
        if await self._run(lambda: self._on_observed_net(name, start)):
            self._count("define_network")

    async def destroy_network(self, name: str) -> None:
        self._count("destroy_network")
        await self._run(lambda: self._on_observed_net(name, lambda net: net.destroy(), gone_is_done=True))

    async def update_network_hosts(self, name: str, updates: tuple[tuple[str, StaticHost], ...]) -> None:
        """Apply (command, host) pairs to the running network only; the persistent
        definition is the define's business."""
        self._count("update_network")

        def update(net: Any) -> None:
            for command, host in updates:
                net.update(_UPDATE_COMMANDS[command], _UPDATE_SECTIONS[host.section], -1, host.xml,
                           libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE)
        await self._run(lambda: self._on_observed_net(name, update))

    async def undefine_network(self, name: str) -> None:
        self._count("undefine_network")
        await self._run(lambda: self._on_observed_net(name, lambda net: net.undefine(), gone_is_done=True))
        self._nets.pop(name, None)

    async def network_taps(self, network: str) -> tuple[str, list[GuestTap]]:
        """The network's bridge, and the tap of every running NIC on it."""
        def scan(net: Any) -> tuple[str, list[GuestTap]]:
            bridge = net.bridgeName()
            taps = []
            for dom in self._c().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                root = ET.fromstring(dom.XMLDesc(0))
                for iface in root.findall("./devices/interface[@type='network']"):
                    source, target, mac = iface.find("source"), iface.find("target"), iface.find("mac")
                    if (source is not None and source.get("network") == network and target is not None
                            and mac is not None):
                        taps.append(GuestTap(dom.name(), target.get("dev", ""), mac.get("address", "")))
            return bridge, taps
        found = await self._run(lambda: self._on_observed_net(network, scan))
        assert found is not None
        return found
