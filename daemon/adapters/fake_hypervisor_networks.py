"""The network half of the in-memory libvirt (see fake_hypervisor.py).

Modelled on the real libvirtd, which tells a running network's persistent definition
apart from its live one (libvirt's test driver does not; the contract suite says where).
"""

from __future__ import annotations

import collections
import copy
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.network_xml import LIVE_SECTIONS, StaticHost, canonical_host, static_hosts
from ..core.observed import NetworkLink, ObservedNetwork
from ..core.ownership import OWNER_TAG, fingerprint, parse_owner
from ..errors import HypervisorError
from .hostnet import GuestTap


@dataclass
class FakeNetwork:
    uuid: str
    name: str
    config: ET.Element | None
    live: ET.Element | None = None
    autostart: bool = False
    bridge: str = ""
    taps: list[GuestTap] = field(default_factory=list)


class FakeNetworkOps:
    """Mixed into FakeHypervisor, which provides these."""

    networks: dict[str, FakeNetwork]
    mutations: collections.Counter[str]
    _looked_nets: dict[str, str]
    _uuids: Any
    _call: Callable[[str], None]
    _emit_net: Callable[[str], None]

    # ---- networks -------------------------------------------------------------------
    def _net(self, name: str) -> FakeNetwork | None:
        uuid = self._looked_nets.get(name)
        if uuid is None:
            raise HypervisorError(f"network {name!r} changed since it was looked at; looking again")
        return self.networks.get(uuid)

    async def observe_network(self, name: str) -> ObservedNetwork | None:
        self._call("observe_network")
        net = next((n for n in self.networks.values() if n.name == name), None)
        if net is None:
            self._looked_nets.pop(name, None)
            return None
        self._looked_nets[name] = net.uuid
        root = net.config if net.config is not None else net.live
        assert root is not None
        owner = parse_owner(root)
        live_hash = live_restart = None
        hosts: frozenset[StaticHost] = frozenset()
        if net.live is not None and owner is not None:
            live_owner = parse_owner(net.live)
            live_hash = live_owner.spec_hash if live_owner else ""
            live_restart = live_owner.restart_hash if live_owner else None
            hosts = static_hosts(net.live)
        persistent = net.config is not None
        return ObservedNetwork(name=name, uuid=net.uuid, active=net.live is not None, owner=owner,
                               live_spec_hash=live_hash, fingerprint=fingerprint(ET.tostring(root, encoding="unicode")),
                               autostart=persistent and net.autostart, persistent=persistent,
                               live_restart_hash=live_restart, live_hosts=hosts)

    async def network_link(self, name: str) -> NetworkLink:
        self._call("network_link")
        net = next((n for n in self.networks.values() if n.name == name), None)
        if net is None:
            return NetworkLink(name, active=False, instance=None)
        owner = parse_owner(net.live if net.live is not None else net.config)
        return NetworkLink(name, active=net.live is not None, instance=owner.owned_by if owner else None)

    async def define_network(self, xml: str) -> str:
        self.mutations["define_network"] += 1
        self._call("define_network")
        root = ET.fromstring(xml)
        name, uuid = root.findtext("name") or "", root.findtext("uuid") or f"fake-net-{next(self._uuids)}"
        same = next((n for n in self.networks.values() if n.name == name), None)
        if same is not None and same.uuid != uuid:
            raise HypervisorError(f"operation failed: network '{name}' already exists with uuid {same.uuid}")
        net = self.networks.get(uuid) or FakeNetwork(uuid=uuid, name=name, config=None,
                                                      bridge=(root.find("bridge").get("name", "")
                                                              if root.find("bridge") is not None else ""))
        owner_el = root.find(f"metadata/{OWNER_TAG}")
        fp = fingerprint(ET.tostring(root, encoding="unicode"))
        if owner_el is not None:
            owner_el.set("fingerprint", fp)
        net.config = root
        self.networks[uuid] = net
        self._looked_nets[name] = uuid
        self._emit_net(name)
        return fp

    async def set_network_autostart(self, name: str, on: bool) -> None:
        self.mutations["set_network_autostart"] += 1
        self._call("set_network_autostart")
        net = self._net(name)
        if net is None or net.config is None:
            raise HypervisorError(f"Network not found: no network with matching name '{name}'")
        net.autostart = bool(on)

    async def start_network(self, name: str, xml: str | None = None) -> None:
        self.mutations["start_network"] += 1
        self._call("start_network")
        net = self._net(name)
        if net is None or net.config is None:
            raise HypervisorError(f"Network not found: no network with matching name '{name}'")
        if net.live is not None:
            raise HypervisorError("Requested operation is not valid: network is already active")
        net.live = copy.deepcopy(net.config)
        self._emit_net(name)

    async def destroy_network(self, name: str) -> None:
        self.mutations["destroy_network"] += 1
        self._call("destroy_network")
        net = self._net(name)
        if net is not None and net.live is not None:
            net.live = None
            if net.config is None:
                del self.networks[net.uuid]
            self._emit_net(name)

    async def update_network_hosts(self, name: str, updates: tuple[tuple[str, StaticHost], ...]) -> None:
        self.mutations["update_network"] += 1
        self._call("update_network")
        net = self._net(name)
        if net is None or net.live is None:
            raise HypervisorError("Requested operation is not valid: network is not running")
        for command, host in updates:
            parent_path, _, tag = LIVE_SECTIONS[host.section].rpartition("/")
            parent = net.live.find(parent_path)
            if command == "delete":
                for el in list(parent if parent is not None else ()):
                    if el.tag == tag and canonical_host(el) == host.xml:
                        parent.remove(el)  # type: ignore[union-attr]
            else:
                if parent is None:
                    raise HypervisorError(f"Requested operation is not valid: no <{parent_path}> to add a host to")
                parent.append(ET.fromstring(host.xml))

    async def undefine_network(self, name: str) -> None:
        self.mutations["undefine_network"] += 1
        self._call("undefine_network")
        net = self._net(name)
        if net is None or net.config is None:
            return
        if net.live is None:
            del self.networks[net.uuid]
        else:
            net.config = None
        self._looked_nets.pop(name, None)
        self._emit_net(name)

    async def network_taps(self, network: str) -> tuple[str, list[GuestTap]]:
        self._call("network_taps")
        net = self._net(network)
        return (net.bridge, list(net.taps)) if net is not None else ("", [])
