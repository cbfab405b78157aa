"""Domains as a kind of the pipeline: how to look at one, and how to carry out its plan.

observe() gathers everything plan_domain reads (libvirt's domain, the overlays of its
nix disks and their builds, which paths of the config exist, and, before a start,
whether the networks it needs are up). execute() carries the actions out, facts
only: image actions one at a time, each run of consecutive libvirt actions in one
adapter call, through a typed mapping from action to operation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Collection
from typing import Any

import structlog

from .adapters.hypervisor_protocol import (AttachDevice, DefineDomain, Destroy, DetachDevice, DomainOp,
                                           HypervisorLike, MarkShutdown, ResizeDisk, SetAutostart, SetLiveOwner,
                                           SetMemory, SetOwner, SetVcpus, Shutdown, Start, Undefine)
from .adapters import seed_iso
from .adapters.images import Images
from .core import identity, live_changes
from .core.domain_plan import plan_domain
from .core.domain_xml import RenderedDomain, console_log_path
from .core.keys import Key, Kind
from .core.observed import BuildPhase, BuildState, DomainEvent, DomainObservation, ObservedDomain, OverlayState
from .core.ownership import DEFAULT_INSTANCE, Owner
from .core.plan import Act, Action, Plan
from .core.spec import DiskType
from .domain_moves import Moves, with_arrival
from .runtime import clock
from .runtime.expectations import Expectations

log = structlog.get_logger("nvirtd.domains")

# libvirt events a successful action causes: they confirm what we did, nothing more
# (qemu emits RESUMED before STARTED on start)
CONFIRMING_EVENTS = {Act.define: (DomainEvent.defined,), Act.start: (DomainEvent.resumed, DomainEvent.started)}
_SIMPLE_OPS: dict[Act, Callable[[Action], DomainOp]] = {
    Act.set_autostart: lambda a: SetAutostart(bool(a.value)), Act.start: lambda a: Start(),
    Act.start_paused: lambda a: Start(paused=True),
    Act.shutdown: lambda a: Shutdown(), Act.destroy: lambda a: Destroy(), Act.undefine: lambda a: Undefine(),
    Act.set_vcpus: lambda a: SetVcpus(int(a.size or 1)), Act.set_memory: lambda a: SetMemory(int(a.size or 0)),
}
LIBVIRT_ACTS = frozenset(_SIMPLE_OPS) | {Act.define, Act.set_owner, Act.mark_shutdown, Act.grow_disk_live,
                                         Act.attach_device, Act.detach_device, Act.set_live_owner, Act.adopt,
                                         Act.mark_leaving, Act.mark_cold}
# actions after which the disks' report is read again (their files or sizes changed)
_DISK_CHANGES = {Act.create_overlay, Act.recreate_overlay, Act.grow_overlay, Act.grow_disk_live}


class DomainKind:
    kind = Kind.domain
    plan = staticmethod(plan_domain)

    def __init__(self, hv: HypervisorLike, images: Images, expectations: Expectations, *, images_dir: str,
                 state_dir: str, declared_networks: Callable[[], Collection[str]], start_concurrency: int = 0,
                 start_order: Callable[[str], tuple[tuple[str, ...], tuple[str, ...]]] = lambda name: ((), ()),
                 instance: str = DEFAULT_INSTANCE, peers: tuple[tuple[str, str], ...] = (),
                 placed_elsewhere: Callable[[str], str | None] = lambda name: None, host: str = "",
                 peer_interval: float = 30.0) -> None:
        self.hv = hv
        self.host = host  # written in the owner element: whose libvirt its fingerprint is of
        # the fleet's other hosts (name, URI): what they have of a domain, and its moves
        self.moves = Moves(hv, images, images_dir=images_dir, instance=instance, peers=peers, host=host,
                           peer_interval=peer_interval, placed_elsewhere=placed_elsewhere)
        self.instance = instance  # startAfter counts this instance's domains only
        self.start_order = start_order  # configstore.start_order: (starts after, started after it)
        # a boot storm's cap: a batch that starts a guest waits for a slot (the rest of the
        # pipeline, and domains that need no start, go on meanwhile)
        self.start_slots = asyncio.Semaphore(start_concurrency) if start_concurrency > 0 else None
        self.images = images
        self.expectations = expectations
        self.images_dir = images_dir
        self.state_dir = state_dir
        self.declared_networks = declared_networks

    # ---- observe --------------------------------------------------------------------
    async def observe(self, name: str, desired: RenderedDomain | None) -> DomainObservation:
        observed = await self.hv.observe_domain(name)
        if desired is None:
            after, dependents = self.start_order(name)
            running = ()
            if observed is not None and observed.power.active and dependents:
                running = tuple([d for d in dependents if await self._runs(d)])
            return DomainObservation(observed, dependents_running=running, wake_after=after)
        fleet = None
        if self.moves.placed_elsewhere(name) is not None:  # another host's: only what a move needs
            fleet = await self.moves.observe(name, desired, observed)
            if not self.moves.comes_here(fleet):  # (unless it comes here: its host is drained)
                return DomainObservation(observed, **fleet)  # type: ignore[arg-type]
        networks = ()
        if observed is None or not observed.power.active:  # only a start waits for them
            declared = self.declared_networks()
            needed = sorted({n.network for n in desired.spec.interfaces.values() if n.network in declared})
            networks = tuple([await self.hv.network_link(n) for n in needed])
        overlays = await self._overlays(name, desired)
        live_disks = None
        if observed is not None and observed.power.active and any(
                ov.wanted_size is not None and ov.wanted_size > ov.virtual_size > 0 for ov in overlays):
            live_disks = await self.hv.live_disks(name)
        after, dependents = self.start_order(name)
        waiting = ()
        if after and (observed is None or not observed.power.active):
            agent = desired.spec.start_after_agent
            waiting = tuple([d for d in after if not await self._runs(d, agent=agent)])
        live_devices = None
        if _unplug_pending(observed):
            live_devices = await self.hv.live_devices(name)
        if fleet is None:
            fleet = await self.moves.observe(name, desired, observed)
        seed_missing, stale = False, ()
        if desired.seed is not None:
            seed_missing = not os.path.exists(desired.seed.path)
            stale = tuple(p for p in seed_iso.domain_seeds(self.images_dir, name) if p != desired.seed.path)
        return DomainObservation(observed, overlays=overlays,
                                 missing_paths=missing_paths(desired) + refused_bases(desired, self.images_dir),
                                 networks=networks, live_disks=live_disks, waiting_for=waiting,
                                 wake_after=dependents, live_devices=live_devices, hotplug=self.hv.hotplug,
                                 seed_missing=seed_missing, stale_seeds=stale, **fleet)  # type: ignore[arg-type]

    async def _runs(self, name: str, *, agent: bool = False) -> bool:
        """Whether nvirtd's domain `name` is up (what startAfter waits for, and a removal for);
        with `agent`, also whether its guest agent answers (startAfterAgent)."""
        seen = await self.hv.observe_domain(name)
        up = (seen is not None and seen.owner is not None and seen.owner.owned_by == self.instance
              and seen.power.active)
        return up and (not agent or await self.hv.agent_answers(name))

    async def _overlays(self, name: str, desired: RenderedDomain) -> tuple[OverlayState, ...]:
        states = []
        for disk_name, disk in desired.spec.disks.items():
            if not disk.overlaid:
                continue
            overlay = identity.overlay_path(self.images_dir, name, disk_name)
            info = await self.images.inspect(overlay)
            backing = info.backing if info else None
            present = bool(backing) and os.path.exists(backing)  # type: ignore[arg-type]
            nix = disk.type == DiskType.nix
            # an image disk's base is there, or missing_paths says it is not: no build
            build = self.images.build_state(disk.build_source) if nix else BuildState(BuildPhase.built,
                                                                                        image=disk.path)
            settings = disk.overlay
            states.append(OverlayState(
                disk=disk_name, overlay=overlay, exists=info is not None, backing=backing, backing_present=present,
                build=build, recreate_on_change=bool(settings and settings.on_image_change == "recreate"),
                # a base outside the nix store is the administrator's file: no GC root, never collected
                rooted=not nix or not present or self.images.is_rooted(backing),  # type: ignore[arg-type]
                actual_size=info.actual_size if info else 0, virtual_size=info.virtual_size if info else 0,
                wanted_size=settings.size_bytes if settings else None, settings="nix" if nix else "image",
            ))
        return tuple(states)

    def facts(self, desired: RenderedDomain) -> dict[str, Any]:
        """For the status: each NIC's MAC, by which `nvirtd status` names the guest's addresses."""
        return {"interfaces": desired.macs}

    # ---- execute --------------------------------------------------------------------
    async def execute(self, name: str, desired: RenderedDomain | None, obs: DomainObservation, plan: Plan,
                      done: list[Action]) -> dict[str, dict[str, Any]]:
        """Carry out the plan, appending each action to `done` once it is; returns the disks' report."""
        key, actions, i = Key(Kind.domain, name), plan.actions, 0
        while i < len(actions):
            batch = [actions[i]]
            if actions[i].kind in LIBVIRT_ACTS:
                while i + len(batch) < len(actions) and actions[i + len(batch)].kind in LIBVIRT_ACTS:
                    batch.append(actions[i + len(batch)])
            events = [e for a in batch for e in CONFIRMING_EVENTS.get(a.kind, ())]
            self.expectations.expect(key, *events)
            try:
                if batch[0].kind in LIBVIRT_ACTS:
                    ops = [self._op(name, a, desired, obs.domain) for a in batch]
                    if self.start_slots is not None and any(a.kind == Act.start for a in batch):
                        async with self.start_slots:
                            await self.hv.apply(name, ops)
                    else:
                        await self.hv.apply(name, ops)
                else:
                    await self._image(name, batch[0], desired)
            except BaseException:
                self.expectations.forget(key, *events)
                raise
            for action in batch:
                extra = {k: v for k, v in (("disk", action.disk), ("device", action.device)) if v}
                if action.kind in (Act.set_vcpus, Act.set_memory):
                    extra["to"] = str(action.size)
                log.info(f"domain_{action.kind.value.replace('-', '_')}", domain=name, **extra)
                done.append(action)
            i += len(batch)
        overlays = obs.overlays
        if desired is not None and any(a.kind in _DISK_CHANGES for a in done):
            overlays = await self._overlays(name, desired)
        return {ov.disk: {"overlay": ov.overlay, "backing": ov.backing, "actual_size": ov.actual_size,
                          "virtual_size": ov.virtual_size} for ov in overlays if ov.exists}

    def _op(self, name: str, action: Action, desired: RenderedDomain | None,
            observed: ObservedDomain | None) -> DomainOp:
        simple = _SIMPLE_OPS.get(action.kind)
        if simple is not None:
            return simple(action)
        if action.kind == Act.mark_shutdown:
            assert observed is not None
            # never the persistent owner: its spec hash would hide that the guest runs an older definition
            live = observed.live_owner or Owner(file=observed.owner.file if observed.owner else "", spec_hash="")
            return MarkShutdown(dataclasses.replace(live, shutdown_started=clock.wall()))
        if action.kind == Act.mark_cold:  # started paused to move: it never ran (its new host powers it off)
            assert observed is not None and observed.owner is not None
            return SetLiveOwner(dataclasses.replace(observed.owner, cold=True))
        if action.kind == Act.mark_leaving:  # its host is drained: where it goes, for that host to see
            assert observed is not None
            live = observed.live_owner or Owner(file=observed.owner.file if observed.owner else "", spec_hash="")
            return SetLiveOwner(dataclasses.replace(live, leaving_for=action.device,
                                                    move_error=live.move_error if action.device else None))
        if action.kind == Act.grow_disk_live:
            assert action.disk is not None and action.size is not None
            return ResizeDisk(identity.overlay_path(self.images_dir, name, action.disk), action.size)
        if action.kind == Act.detach_device:  # what the running guest has: its live parts say how to find it
            assert observed is not None and observed.live_owner is not None and action.device is not None
            have = live_changes.decode(observed.live_owner.live)
            assert have is not None
            return DetachDevice(have.devices[action.device].ident)
        assert desired is not None
        if action.kind == Act.attach_device:
            assert action.device is not None
            return AttachDevice(desired.device_xml[action.device], desired.live.devices[action.device].ident)
        if action.kind == Act.set_live_owner:
            assert observed is not None and observed.live_owner is not None
            return SetLiveOwner(dataclasses.replace(
                observed.live_owner, spec_hash=desired.spec_hash if action.value else observed.live_owner.spec_hash,
                restart_hash=desired.restart_hash, live=action.detail, file=desired.owner.file))
        owner = dataclasses.replace(desired.owner, host=self.host or None)
        if action.kind == Act.adopt:  # a migration's definition: this libvirt's fingerprint of it
            assert observed is not None and observed.owner is not None
            return SetOwner(dataclasses.replace(observed.owner, fingerprint=observed.fingerprint, host=self.host,
                                                arrival=None, arriving_from=None))
        if action.kind == Act.set_owner:  # (with a fleet's arrival marker, or none)
            assert observed is not None and observed.owner is not None
            return SetOwner(with_arrival(dataclasses.replace(observed.owner, instance=owner.instance,
                                                             shutdown_timeout=owner.shutdown_timeout),
                                         action.detail))
        if desired.spec.console_log:  # virtlogd writes it, into a directory that must exist
            os.makedirs(os.path.dirname(console_log_path(self.state_dir, name)), exist_ok=True)
        return DefineDomain(desired.xml, with_arrival(owner, action.detail))

    async def _image(self, name: str, action: Action, desired: RenderedDomain | None) -> None:
        assert desired is not None
        if action.kind == Act.migrate:
            assert action.device is not None
            await self.moves.migrate(name, desired, action.device, paused=bool(action.value))
            return
        if action.kind == Act.set_aside:
            assert action.disk is not None
            self.moves.set_aside(name, action.disk, action.detail or "moved")
            return
        if action.kind == Act.write_seed:
            assert desired.seed is not None
            await seed_iso.write_seed(desired.seed, domain=name)
            return
        if action.kind == Act.remove_stale_seeds:
            seed_iso.remove_stale(self.images_dir, name, desired.seed.path if desired.seed else None, domain=name)
            return
        assert action.disk is not None
        disk = desired.spec.disks[action.disk]
        if action.kind == Act.build_image:
            self.images.request_build(disk.build_source, flake=disk.is_flake)
            return
        if action.kind == Act.root_image:
            assert action.image is not None
            await self.images.ensure_root(action.image)
            return
        overlay = identity.overlay_path(self.images_dir, name, action.disk)
        if action.kind == Act.grow_overlay:
            assert action.size is not None
            await self.images.grow_overlay(overlay, action.size, domain=name, disk=action.disk)
            return
        if action.kind == Act.recreate_overlay:
            self.images.move_aside(overlay, domain=name, disk=action.disk)
        size = disk.overlay.size_bytes if disk.overlay else None
        assert action.image is not None
        await self.images.create_overlay(overlay, action.image, size=size, domain=name, disk=action.disk,
                                         root=disk.type == DiskType.nix)


def _unplug_pending(observed: ObservedDomain | None) -> bool:
    """Whether the running guest was asked to release a device (the plan looks whether it did)."""
    if observed is None or not observed.power.active or observed.live_owner is None:
        return False
    have = live_changes.decode(observed.live_owner.live)
    return have is not None and any(d.pending_since is not None for d in have.devices.values())


def refused_bases(desired: RenderedDomain, images_dir: str) -> tuple[str, ...]:
    """An image disk's base in nvirtd's images directory would be another VM's overlay (or
    a seed): writes to that VM would change this one's disk. Refused, like a missing path."""
    images = [(n, d) for n, d in desired.spec.disks.items() if d.type == DiskType.image]
    if not images:  # most domains: no system call at all
        return ()
    where = f"{desired.source_file}: domains.{desired.name}"
    folder = os.path.realpath(images_dir)
    return tuple(f"{where}.disks.{n}.path: {d.path} is in nvirtd's images directory {images_dir}; a base must "
                 "be an image of its own (copy it elsewhere first)"
                 for n, d in images if os.path.dirname(os.path.realpath(str(d.path))) == folder)


def missing_paths(desired: RenderedDomain) -> tuple[str, ...]:
    """Each path the config names that is not there, as "file: field: what"."""
    where = f"{desired.source_file}: domains.{desired.name}"
    problems = []
    for disk_name, disk in desired.spec.disks.items():
        if disk.type in (DiskType.file, DiskType.block, DiskType.dir, DiskType.image) and not os.path.exists(disk.path):
            problems.append(f"{where}.disks.{disk_name}.path: {disk.path} does not exist")
    for tag, share in desired.spec.shares.items():
        if not os.path.isdir(share.path):
            problems.append(f"{where}.shares.{tag}.path: {share.path} is not a directory")
    boot = desired.spec.boot
    if boot is not None:
        for field_name in ("kernel", "initrd"):
            path = getattr(boot, field_name)
            if path and not os.path.exists(path):
                problems.append(f"{where}.boot.{field_name}: {path} does not exist")
    return tuple(problems)
