"""Networks as a kind of the pipeline: how to look at one, and how to carry out its plan.

observe() reads libvirt's network and, for a removal only, which domains still use
it; execute() makes one adapter call per action. Guests that kept running through a
network restart keep their taps, detached from the new bridge: `reattach-nics`
plugs them back in on this host (a remote host's guests stay detached until they
restart, which the log says).
"""

from __future__ import annotations

from typing import Any

import structlog

from .adapters import hostnet
from .adapters.hypervisor_networks import runs_on_this_host
from .adapters.hypervisor_protocol import HypervisorLike
from .core.keys import Kind
from .core.network_plan import plan_network
from .core.network_xml import RenderedNetwork
from .core.observed import NetworkObservation
from .core.plan import Act, Action, Plan

log = structlog.get_logger("nvirtd.networks")


class NetworkKind:
    kind = Kind.network
    plan = staticmethod(plan_network)

    def __init__(self, hv: HypervisorLike) -> None:
        self.hv = hv

    async def observe(self, name: str, desired: RenderedNetwork | None) -> NetworkObservation:
        observed = await self.hv.observe_network(name)
        used_by: tuple[str, ...] = ()
        if desired is None and observed is not None and observed.owned:
            used_by = tuple(sorted(set(await self.hv.domains_using_network(name))))
        return NetworkObservation(observed, used_by=used_by)

    def facts(self, desired: RenderedNetwork) -> dict[str, Any]:
        return {}

    async def execute(self, name: str, desired: RenderedNetwork | None, obs: NetworkObservation, plan: Plan,
                      done: list[Action]) -> None:
        for action in plan.actions:
            match action.kind:
                case Act.define:
                    assert desired is not None
                    await self.hv.define_network(desired.xml)
                case Act.set_autostart:
                    await self.hv.set_network_autostart(name, bool(action.value))
                case Act.start:
                    await self.hv.start_network(name, desired.xml if desired is not None else None)
                case Act.destroy:
                    await self.hv.destroy_network(name)
                case Act.undefine:
                    await self.hv.undefine_network(name)
                case Act.update_hosts:
                    await self.hv.update_network_hosts(name, action.updates)
                    for command, host in action.updates:
                        log.info(f"network_host_{'added' if command == 'add' else 'deleted'}", network=name,
                                 section=host.section, host=host.xml)
                case Act.reattach_nics:
                    await self._reattach(name)
                case _:
                    raise ValueError(f"not a network action: {action}")
            if action.kind not in (Act.update_hosts, Act.reattach_nics):
                log.info(f"network_{action.kind.value.replace('-', '_')}", network=name)
            done.append(action)

    async def _reattach(self, name: str) -> None:
        if not runs_on_this_host(self.hv.uri):
            # the test driver has no taps; a remote host's guests stay detached until they restart
            level = log.debug if self.hv.uri.startswith("test:") else log.warning
            level("network_nics_not_reattached", network=name, uri=self.hv.uri,
                  detail="the guests' tap devices are not on this host")
            return
        bridge, taps = await self.hv.network_taps(name)
        for tap in taps:
            if await hostnet.plug(tap, bridge):
                log.info("domain_nic_reattached", domain=tap.domain, network=name, tap=tap.dev, bridge=bridge)
            else:
                log.info("domain_nic_gone", domain=tap.domain, network=name, tap=tap.dev,
                         detail="the guest stopped meanwhile; its tap is gone or now another guest's")
