"""reconcile(key): read the desired and the observed state fresh, plan, act, report.

Keys are ("domain", name) or ("network", name). Whatever put a key in the queue
(a reload, a libvirt event, a finished build, the safety resync), the work is the
same, and running it twice in a row does nothing the second time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import structlog

from .runtime import clock
from .adapters.hypervisor import Hypervisor
from .adapters.images import Images
from .core import identity
from .core.desired import Rendered
from .core.observed import ObservedDomain, OverlayState
from .core.ownership import DEFAULT_INSTANCE
from .core.plan import (SHUTDOWN_RESEND_SECONDS, Act, DomainInputs, NetworkInputs, Phase, Plan, ShutdownProgress,
                        plan_domain, plan_network)
from .core.spec import DiskType
from .executor import DomainExecutor, Memory, NetworkExecutor
from .runtime.expectations import Expectations
from .status import StatusStore

log = structlog.get_logger("nvirtd.reconciler")
Key = tuple[str, str]
MISSING_PATH_RETRY = 30.0  # a disk file named in the config may appear later (created by hand)


class Reconciler:
    def __init__(self, hv: Hypervisor, images: Images, status: StatusStore, *, images_dir: str,
                 state_dir: str = "/var/lib/nvirtd", dry_run: bool = False,
                 instance: str = DEFAULT_INSTANCE) -> None:
        self.dry_run = dry_run  # `nvirtd plan`: plan and report, act on nothing
        self.instance = instance
        self.hv = hv
        self.images = images
        self.status = status
        self.images_dir = images_dir
        self.memory = Memory()
        self.desired: Rendered | None = None
        self.expectations = Expectations()
        self.domains = DomainExecutor(hv, images, self.memory, images_dir=images_dir, state_dir=state_dir,
                                      expectations=self.expectations)
        self.networks = NetworkExecutor(hv, self.memory)
        self.passes = 0
        self.enqueue: Callable[[Key], None] = lambda key: None
        self.may_declare: Callable[[str], str | None] = lambda name: None  # the config reader's

    def waiting_on_build(self, config_path: str) -> list[Key]:
        """Domains whose nix disks use `config_path` (requeued when its build ends)."""
        if self.desired is None:
            return []
        return [("domain", name) for name, d in self.desired.domains.items()
                if any(disk.type == DiskType.nix and disk.path == config_path for disk in d.spec.disks.values())]

    async def reconcile(self, key: Key) -> float | None:
        """One pass for one key; returns the delay after which to look again, if any."""
        return (await self.plan_and_act(key)).requeue_after

    async def plan_and_act(self, key: Key) -> Plan:
        started = clock.monotonic()
        kind, name = key
        self.passes += 1
        plan = await (self._domain(name) if kind == "domain" else self._network(name))
        log.log(
            20 if plan.actions else 10, "reconciled", **{kind: name}, phase=plan.phase.value,
            actions=[str(a) for a in plan.actions], conditions=sorted(c.value for c in plan.conditions),
            ms=round((clock.monotonic() - started) * 1000, 1),
            **({"detail": plan.message} if plan.message and plan.actions else {}),
        )
        return plan

    def _report(self, kind: str, name: str, plan: Plan, file: str | None, **extra: Any) -> None:
        if plan.phase == Phase.removed:
            self.status.remove(kind, name)
            return
        error = plan.message if plan.phase == Phase.error else None
        message = None if error else plan.message
        if file and kind == "domain" and self.desired is not None:
            errs = [str(e) for e in self.desired.all_errors if e.file == file and e.about(kind, name)]
            error = error or ("; ".join(errs) if errs else None)
        if plan.actions:  # the last thing nvirtd did to it stays visible until the next
            extra["last_actions"] = [str(a) for a in plan.actions]
        self.status.update(kind, name, phase=plan.phase.value, conditions=sorted(c.value for c in plan.conditions),
                           message=message, error=error, file=file, **extra)

    def _hold(self, kind: str, name: str, desired: Any, observed: Any) -> tuple[str | None, bool, bool]:
        """(source file, in conflict, held): whether the config lets nvirtd act on it now."""
        owner = observed.owner if observed is not None else None
        source = desired.source_file if desired is not None else (owner.file if owner is not None else None)
        if self.desired is None:  # no config read yet: hold everything
            return source, False, True
        conflict = (kind, name) in self.desired.state.conflicts
        held = not conflict and self.desired.held(kind, name, source)
        if desired is None and owner is not None and self.may_declare(name) is not None:
            held = True  # removed from its file, but a broken file may declare it now: wait for it
        return source, conflict, held

    async def _domain(self, name: str) -> Plan:
        desired_set = self.desired
        desired = desired_set.domains.get(name) if desired_set else None
        observed = await self.hv.observe_domain(name)
        source, conflict, held = self._hold("domain", name, desired, observed)
        overlays, disks_report = await self._overlays(name, desired) if desired else ((), {})
        now = clock.monotonic()
        if observed is None or not observed.power.active:
            self.memory.shutdowns.pop(name, None)
        waiting = self._networks_waiting(desired) if desired else ()
        inputs = DomainInputs(
            desired=desired, observed=observed, now=now, held=held, conflict=conflict,
            overlays=overlays, shutdown=self._shutdown_progress(name, observed, now),
            start_not_before=self.memory.start_not_before(name), networks_waiting=waiting,
            instance=self.instance,
        )
        plan = plan_domain(inputs)
        creates = {Act.define, Act.start, Act.create_overlay, Act.recreate_overlay}
        missing = self._missing_paths(desired) if any(a.kind in creates for a in plan.actions) else []
        if missing:  # never define or start a VM on a disk that is not there; stopping it is fine
            plan = Plan(phase=Phase.error, message="; ".join(missing), requeue_after=MISSING_PATH_RETRY)
        if not self.dry_run:
            await self.domains.run(name, plan.actions, desired, observed)
            if any(a.kind in (Act.create_overlay, Act.recreate_overlay) for a in plan.actions):
                _, disks_report = await self._overlays(name, desired)
        self._report("domain", name, plan, source, disks=disks_report)
        if plan.phase == Phase.removed:
            self.memory.starts.pop(name, None)
            if observed is not None and plan.actions:
                for network in observed.networks:  # a network waiting for its users to go
                    self.enqueue(("network", network))
        return plan

    def _shutdown_progress(self, name: str, observed: ObservedDomain | None, now: float) -> ShutdownProgress | None:
        """This process's record of a graceful shutdown, or the one a previous nvirtd began
        (its start is in the running instance's metadata): the clock is not reset by a restart."""
        progress = self.memory.shutdowns.get(name)
        started = observed.live_owner.shutdown_started if observed and observed.live_owner else None
        if progress is None and started is not None and observed is not None and observed.power.active:
            begun = now - max(0.0, clock.wall() - started)
            progress = ShutdownProgress(started_at=begun, last_sent_at=now - SHUTDOWN_RESEND_SECONDS)
            self.memory.shutdowns[name] = progress
        return progress

    def _missing_paths(self, desired: Any) -> list[str]:
        problems = []
        for disk_name, disk in desired.spec.disks.items():
            if disk.type in (DiskType.file, DiskType.block, DiskType.dir) and not os.path.exists(disk.path):
                problems.append(f"{desired.source_file}: domains.{desired.name}.disks.{disk_name}.path: "
                                f"{disk.path} does not exist")
        for tag, share in desired.spec.shares.items():
            if not os.path.isdir(share.path):
                problems.append(f"{desired.source_file}: domains.{desired.name}.shares.{tag}.path: "
                                f"{share.path} is not a directory")
        boot = desired.spec.boot
        if boot is not None:
            for field_name in ("kernel", "initrd"):
                path = getattr(boot, field_name)
                if path and not os.path.exists(path):
                    problems.append(f"{desired.source_file}: domains.{desired.name}.boot.{field_name}: "
                                    f"{path} does not exist")
        return problems

    def _networks_waiting(self, desired: Any) -> tuple[str, ...]:
        """Declared networks this domain uses whose status is not running yet."""
        if self.desired is None:
            return ()
        waiting = []
        for nic in desired.spec.interfaces.values():
            if nic.network and nic.network in self.desired.networks:
                entry = self.status.entries.get(("network", nic.network))
                if entry is None or entry.phase != Phase.running.value:
                    waiting.append(nic.network)
        return tuple(sorted(set(waiting)))

    async def _overlays(self, name: str, desired: Any) -> tuple[tuple[OverlayState, ...], dict[str, Any]]:
        states = []
        report: dict[str, Any] = {}
        for disk_name, disk in desired.spec.disks.items():
            if disk.type != DiskType.nix:
                continue
            overlay = identity.overlay_path(self.images_dir, name, disk_name)
            info = await self.images.inspect(overlay)
            backing = info.backing if info else None
            states.append(OverlayState(
                disk=disk_name, overlay=overlay, exists=info is not None, backing=backing,
                backing_present=bool(backing) and os.path.exists(backing),  # type: ignore[arg-type]
                build=self.images.build_state(disk.path),
                recreate_on_change=bool(disk.nix and disk.nix.on_image_change == "recreate"),
            ))
            if info is not None:
                if backing and os.path.exists(backing) and not self.dry_run:
                    await self.images.ensure_root(backing)
                report[disk_name] = {"overlay": overlay, "backing": backing, "actual_size": info.actual_size,
                                     "virtual_size": info.virtual_size}
        return tuple(states), report

    async def _network(self, name: str) -> Plan:
        desired_set = self.desired
        desired = desired_set.networks.get(name) if desired_set else None
        observed = await self.hv.observe_network(name)
        source, conflict, held = self._hold("network", name, desired, observed)
        used_by: tuple[str, ...] = ()
        if desired is None and observed is not None and observed.owned and desired_set is not None:
            declared = [d for d, r in desired_set.domains.items()
                        if any(n.network == name for n in r.spec.interfaces.values())]
            used_by = tuple(sorted(set(declared) | set(await self.hv.domains_using_network(name))))
        plan = plan_network(NetworkInputs(desired=desired, observed=observed, held=held, conflict=conflict,
                                          used_by=used_by, reattach_pending=name in self.memory.reattach_pending,
                                          instance=self.instance))
        if not self.dry_run:
            await self.networks.run(name, plan.actions, desired)
        before = self.status.entries.get(("network", name))
        was_running = before is not None and before.phase == Phase.running.value
        self._report("network", name, plan, source)
        if plan.phase == Phase.running and not was_running and self.desired is not None:
            for dom_name, dom in self.desired.domains.items():  # they wait for it: go now
                if any(nic.network == name for nic in dom.spec.interfaces.values()):
                    self.enqueue(("domain", dom_name))
        return plan
