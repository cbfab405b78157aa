"""The config format of networks (`networks.<name>` in /etc/nvirt.d/*.json).

PURE: imports only the standard library and pydantic.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from .spec_base import BRIDGE_PATTERN, IPv4, IPv6, Model


class ForwardMode(StrEnum):
    nat = "nat"
    route = "route"
    open = "open"
    isolated = "isolated"
    bridge = "bridge"


class DhcpRange(Model):
    start: IPv4 = Field(description="First address handed out.")
    end: IPv4 = Field(description="Last address handed out.")


class Dhcp(Model):
    range: DhcpRange | None = Field(None, description="Dynamic range (omit for static leases only).")
    hosts: dict[str, IPv4] = Field(
        default_factory=dict,
        description="Static leases: key is a MAC, a domain name, or DOMAIN.NIC; value an IPv4 address. "
                    "Applied to a running network in place (no restart).",
    )


class Ip(Model):
    address: IPv4 = Field(description="The host's address on the network (the gateway).")
    prefix: int = Field(24, ge=1, le=32, description="Prefix length of the network.")

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.address}/{self.prefix}")


class Ip6(Model):
    address: IPv6 = Field(description="The host's IPv6 address on the network.")
    prefix: int = Field(64, ge=1, le=128, description="Prefix length of the network.")


class Dns(Model):
    hosts: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")],
                IPv4 | IPv6] = Field(
        default_factory=dict,
        description="Extra names served by the network's DNS: hostname -> address. Applied in place (no restart).")


class Network(Model):
    uuid: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")] | None = Field(
        None, description="Default: derived from the name, stable.")
    forward: ForwardMode = Field(strict=False, default=ForwardMode.nat, description="nat, route, open, isolated (no forwarding) or bridge.")
    bridge: Annotated[str, Field(pattern=BRIDGE_PATTERN)] | None = Field(
        None, description="Host bridge: the one to use with forward=bridge, else the name to create."
    )
    ip: Ip | None = Field(None, description="IPv4 address of the host on the network.")
    ip6: Ip6 | None = Field(None, description="IPv6 address of the host on the network (no DHCPv6).")
    dns: Dns | None = Field(None, description="DNS entries served by the network's dnsmasq.")
    dhcp: Dhcp | None = Field(None, description="DHCP served by libvirt's dnsmasq.")
    domain: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")] | None = Field(
        None, description="DNS domain of the network."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.forward == ForwardMode.bridge:
            if self.bridge is None:
                raise ValueError("@bridge: forward 'bridge' needs 'bridge': the name of an existing host bridge")
            if any(x is not None for x in (self.ip, self.ip6, self.dhcp, self.dns)):
                raise ValueError("a bridged network has no 'ip', 'ip6', 'dhcp' or 'dns': the host bridge's LAN "
                                 "provides them")
        if self.dhcp is not None:
            if self.ip is None:
                raise ValueError("@ip: 'dhcp' needs 'ip'")
            net = self.ip.interface.network
            rng = self.dhcp.range
            addrs = [rng.start, rng.end] if rng else []
            addrs += list(self.dhcp.hosts.values())
            for addr in addrs:
                if addr not in net:
                    raise ValueError(f"@dhcp: {addr} is outside the network {net}")
            if rng and int(rng.start) > int(rng.end):
                raise ValueError(f"@dhcp.range: dhcp range starts ({rng.start}) after it ends ({rng.end})")
            given: dict[ipaddress.IPv4Address, str] = {}
            for key, addr in sorted(self.dhcp.hosts.items()):
                if addr == self.ip.address:
                    raise ValueError(f"@dhcp.hosts.{key}: {addr} is the host's own address on the network (ip.address)")
                if addr in given:
                    raise ValueError(f"@dhcp.hosts.{key}: {addr} is given to {given[addr]!r} too")
                given[addr] = key
        return self
