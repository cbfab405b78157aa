"""Network spec -> libvirt network XML, built with ElementTree.

PURE: standard library only (plus the spec models).

Static DHCP hosts may name a MAC, a domain (its only NIC on this network) or
DOMAIN.NIC; names are resolved here against the desired domains, so the lease
follows the domain's stable MAC.

Static DHCP and DNS hosts are the part of a network libvirt can change while it
runs (virNetworkUpdate): `static_hosts` gives them in a form that compares equal
between our XML and libvirt's, and the restart hash covers everything else.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Mapping

from . import identity
from .ownership import DEFAULT_INSTANCE, Owner, digest_of, owned_text, spec_hash
from .xmlbuild import RenderedXml, serialize, sub
from .spec import Domain, ForwardMode, Network


# virNetworkUpdate's section names (as virsh spells them) and where each lives
LIVE_SECTIONS = {"ip-dhcp-host": "ip/dhcp/host", "dns-host": "dns/host"}


@dataclass(frozen=True, slots=True, order=True)
class StaticHost:
    """One <host> of a live-updatable section, canonical: attributes sorted, so libvirt's
    attribute order does not matter."""

    section: str
    xml: str


def canonical_host(el: ET.Element) -> str:
    out = ET.Element(el.tag, dict(sorted(el.attrib.items())))
    for child in el:
        sub(out, child.tag, (child.text or "").strip(), **dict(sorted(child.attrib.items())))
    return ET.tostring(out, encoding="unicode")


def static_hosts(root: ET.Element) -> frozenset[StaticHost]:
    return frozenset(StaticHost(section, canonical_host(el))
                     for section, path in LIVE_SECTIONS.items() for el in root.findall(path))


def restart_hash(root: ET.Element) -> str:
    """Hash of the rendered XML without what a live update can change."""
    bare = copy.deepcopy(root)
    for path in LIVE_SECTIONS.values():
        parent_path, _, tag = path.rpartition("/")
        for parent in bare.findall(parent_path):
            for el in parent.findall(tag):
                parent.remove(el)
    dns = bare.find("dns")
    if dns is not None and len(dns) == 0 and not dns.attrib:  # the first DNS host is live too
        bare.remove(dns)
    return spec_hash(bare)


@dataclass(frozen=True)
class RenderedNetwork(RenderedXml):
    spec: Network
    restart_hash: str = ""
    hosts: frozenset[StaticHost] = field(default_factory=frozenset, compare=False)


def nics_on(network: str, domains: Mapping[str, Domain]) -> dict[str, list[tuple[str, str]]]:
    """For each domain: [(nic name, mac)] of its NICs attached to `network`."""
    result: dict[str, list[tuple[str, str]]] = {}
    for dom_name, dom in domains.items():
        uuid = identity.domain_uuid(dom_name, dom.uuid)
        for nic_name, nic in dom.interfaces.items():
            if nic.network == network:
                result.setdefault(dom_name, []).append((nic_name, identity.interface_mac(uuid, nic_name, nic.mac)))
    return result


def resolve_host(key: str, network: str, domains: Mapping[str, Domain]) -> tuple[str, str | None]:
    """A dhcp.hosts key -> (mac, hostname). Raises ValueError naming what is wrong."""
    if re.match(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", key):
        return key.lower(), None
    attached = nics_on(network, domains)
    dom_name, _, nic_name = key.partition(".") if key not in domains else (key, "", "")
    if dom_name not in domains:
        raise ValueError(f"static host {key!r} is neither a MAC nor a declared domain")
    nics = attached.get(dom_name, [])
    if nic_name:
        nics = [n for n in nics if n[0] == nic_name]
    if len(nics) != 1:
        raise ValueError(
            f"static host {key!r}: domain {dom_name!r} has {len(nics)} matching NICs on network "
            f"{network!r}; name one as DOMAIN.NIC or give a MAC"
        )
    return nics[0][1], dom_name


def render_network(name: str, spec: Network, domains: Mapping[str, Domain], *, source_file: str,
                   instance: str = DEFAULT_INSTANCE) -> RenderedNetwork:
    uuid = identity.network_uuid(name, spec.uuid)
    root = ET.Element("network")
    sub(root, "name", name)
    sub(root, "uuid", uuid)
    if spec.forward != ForwardMode.isolated:
        sub(root, "forward", mode=spec.forward.value)
    if spec.forward == ForwardMode.bridge:
        sub(root, "bridge", name=spec.bridge)  # type: ignore[arg-type]
    else:
        sub(root, "bridge", name=spec.bridge or identity.bridge_name(name), stp="on", delay="0")
    if spec.domain:
        sub(root, "domain", name=spec.domain, localOnly="yes")
    if spec.dns is not None and spec.dns.hosts:
        dns = sub(root, "dns")
        by_address: dict[str, list[str]] = {}
        for hostname, address in sorted(spec.dns.hosts.items()):
            by_address.setdefault(str(address), []).append(hostname)
        for address, hostnames in by_address.items():
            host = sub(dns, "host", ip=address)
            for hostname in hostnames:
                sub(host, "hostname", hostname)
    if spec.ip is not None:
        ip = sub(root, "ip", address=str(spec.ip.address), prefix=str(spec.ip.prefix))
        if spec.dhcp is not None:
            dhcp = sub(ip, "dhcp")
            if spec.dhcp.range is not None:
                sub(dhcp, "range", start=str(spec.dhcp.range.start), end=str(spec.dhcp.range.end))
            for key, addr in sorted(spec.dhcp.hosts.items()):
                mac, hostname = resolve_host(key, name, domains)
                attrs = {"mac": mac, "ip": str(addr)}
                if hostname and re.fullmatch(r"[A-Za-z0-9-]{1,63}", hostname):
                    attrs["name"] = hostname
                sub(dhcp, "host", **attrs)
    if spec.ip6 is not None:
        sub(root, "ip", family="ipv6", address=str(spec.ip6.address), prefix=str(spec.ip6.prefix))
    text = serialize(root)
    digest, restart = digest_of(text), restart_hash(root)
    hosts = static_hosts(root)
    owner = Owner(file=source_file, spec_hash=digest, restart_hash=restart, instance=instance)
    return RenderedNetwork(name=name, uuid=uuid, spec_hash=digest, source_file=source_file,
                           spec=spec, restart_hash=restart, hosts=hosts, xml=owned_text(text, owner), owner=owner)
