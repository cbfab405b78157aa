"""Carry out a plan's actions, one small function per kind. No decisions here.

The executor records what the reconciler must remember between passes (when a
graceful shutdown began, when a domain was last started) in the Memory it is
given; everything else it learns again from libvirt on the next pass.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import structlog

from .runtime import clock
from .adapters import hostnet
from .adapters.hypervisor import Hypervisor
from .adapters.hypervisor_networks import runs_on_this_host
from .adapters.images import Images
from .core import identity
from .core.domain_xml import RenderedDomain, console_log_path
from .core.network_xml import RenderedNetwork
from .core.observed import ObservedDomain
from .core.ownership import Owner, parse_owner
from .core.plan import Act, Action, ShutdownProgress
from .runtime.expectations import Expectations

log = structlog.get_logger("nvirtd.executor")


@dataclass(slots=True)
class StartRecord:
    count: int
    last: float


@dataclass(slots=True)
class Memory:
    """What must survive between reconcile passes of one daemon process."""

    shutdowns: dict[str, ShutdownProgress] = field(default_factory=dict)
    starts: dict[str, StartRecord] = field(default_factory=dict)
    # networks restarted whose guests' NICs are not all back on the bridge yet: a
    # failure half-way must not be forgotten once the network itself looks fine
    reattach_pending: set[str] = field(default_factory=set)

    QUICK_DEATH = 60.0  # a guest that stops sooner than this after a start counts as a quick death

    @staticmethod
    def _backoff(count: int) -> float:
        return 0.0 if count <= 1 else min(5.0 * 2 ** (count - 2), 300.0)

    def start_not_before(self, name: str) -> float:
        """First restart at once; after repeated quick deaths 5 s, 10 s, ... up to 5 min."""
        rec = self.starts.get(name)
        return 0.0 if rec is None else rec.last + self._backoff(rec.count)

    def record_start(self, name: str, now: float) -> None:
        rec = self.starts.get(name)
        quick = rec is not None and now - rec.last < self.QUICK_DEATH + self._backoff(rec.count)
        self.starts[name] = StartRecord(count=rec.count + 1 if rec is not None and quick else 1, last=now)

    def record_shutdown(self, name: str, now: float) -> None:
        prev = self.shutdowns.get(name)
        self.shutdowns[name] = ShutdownProgress(started_at=prev.started_at if prev else now, last_sent_at=now)


# actions that are libvirt calls, and the adapter operation each one is
LIBVIRT_OPS = {Act.define: "define_domain", Act.set_owner: "set_owner", Act.set_autostart: "set_autostart",
               Act.start: "start", Act.mark_shutdown: "mark_shutdown", Act.shutdown: "shutdown",
               Act.destroy: "destroy", Act.undefine: "undefine"}

# libvirt events a successful action causes: they confirm what we did, nothing more
# (qemu emits RESUMED before STARTED on start)
CONFIRMING_EVENTS = {Act.define: ("defined",), Act.start: ("resumed", "started")}


class DomainExecutor:
    def __init__(self, hv: Hypervisor, images: Images, memory: Memory, *, images_dir: str, state_dir: str,
                 expectations: Expectations | None = None) -> None:
        self.hv = hv
        self.state_dir = state_dir
        self.images = images
        self.memory = memory
        self.images_dir = images_dir
        self.expectations = expectations or Expectations()

    async def run(self, name: str, actions: tuple[Action, ...], desired: RenderedDomain | None,
                  observed: ObservedDomain | None = None) -> None:
        """Image actions one by one; each run of consecutive libvirt actions in one adapter call."""
        i = 0
        while i < len(actions):
            batch = [actions[i]]
            if actions[i].kind in LIBVIRT_OPS:
                while i + len(batch) < len(actions) and actions[i + len(batch)].kind in LIBVIRT_OPS:
                    batch.append(actions[i + len(batch)])
            events = [e for a in batch for e in CONFIRMING_EVENTS.get(a.kind, ())]
            self.expectations.expect(("domain", name), *events)
            try:
                if batch[0].kind in LIBVIRT_OPS:
                    await self._libvirt(name, batch, desired, observed)
                else:
                    await self._image(name, batch[0], desired)
            except BaseException:
                self.expectations.forget(("domain", name), *events)
                raise
            for action in batch:
                log.info(f"domain_{action.kind.value.replace('-', '_')}", domain=name,
                         **({"disk": action.disk} if action.disk else {}))
            i += len(batch)

    async def _image(self, name: str, action: Action, desired: RenderedDomain | None) -> None:
        assert desired is not None and action.disk is not None
        if action.kind == Act.build_image:
            self.images.request_build(desired.spec.disks[action.disk].path)
            return
        assert action.image is not None and action.kind in (Act.create_overlay, Act.recreate_overlay)
        disk = desired.spec.disks[action.disk]
        overlay = identity.overlay_path(self.images_dir, name, action.disk)
        if action.kind == Act.recreate_overlay:
            self.images.move_aside(overlay, domain=name, disk=action.disk)
        size = disk.nix.size_bytes if disk.nix else None
        await self.images.create_overlay(overlay, action.image, size=size, domain=name, disk=action.disk)

    async def _libvirt(self, name: str, batch: list[Action], desired: RenderedDomain | None,
                       observed: ObservedDomain | None) -> None:
        ops: list[tuple[str, Any]] = []
        for action in batch:
            if action.kind in (Act.define, Act.set_owner):
                assert desired is not None
                owner = parse_owner(desired.tree)
                if action.kind == Act.set_owner:
                    assert observed is not None and observed.owner is not None
                    owner = dataclasses.replace(observed.owner, instance=owner.instance,
                                                shutdown_timeout=owner.shutdown_timeout)
                elif desired.spec.console_log:  # virtlogd writes it, into a directory that must exist
                    os.makedirs(os.path.dirname(console_log_path(self.state_dir, name)), exist_ok=True)
                ops.append((LIBVIRT_OPS[action.kind], (desired.xml, owner) if action.kind == Act.define else owner))
            elif action.kind == Act.mark_shutdown:
                assert observed is not None
                # never the persistent owner: its spec hash would hide that the guest runs an older definition
                live = observed.live_owner or Owner(file=observed.owner.file if observed.owner else "", spec_hash="")
                ops.append(("mark_shutdown", dataclasses.replace(live, shutdown_started=clock.wall())))
            else:
                ops.append((LIBVIRT_OPS[action.kind], action.value))
        await self.hv.apply(name, ops)
        now = clock.monotonic()
        for action in batch:
            if action.kind == Act.start:
                self.memory.record_start(name, now)
            elif action.kind == Act.shutdown:
                self.memory.record_shutdown(name, now)


class NetworkExecutor:
    def __init__(self, hv: Hypervisor, memory: Memory) -> None:
        self.hv = hv
        self.memory = memory

    async def run(self, name: str, actions: tuple[Action, ...], desired: RenderedNetwork | None) -> None:
        if any(a.kind == Act.reattach_nics for a in actions):
            self.memory.reattach_pending.add(name)
        for action in actions:
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
                    self.memory.reattach_pending.discard(name)
                case Act.update_hosts:
                    await self.hv.update_network_hosts(name, action.updates)
                    for command, host in action.updates:
                        log.info(f"network_host_{'added' if command == 'add' else 'deleted'}", network=name,
                                 section=host.section, host=host.xml)
                    continue
                case Act.reattach_nics:
                    await self._reattach(name)
                    self.memory.reattach_pending.discard(name)
                    continue
                case _:
                    raise ValueError(f"not a network action: {action}")
            log.info(f"network_{action.kind.value.replace('-', '_')}", network=name)

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
