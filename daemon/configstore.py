"""The desired state: the config directory read, merged and rendered, and what each key wants.

A broken file keeps its last good content (`_last_good`); a deleted file is
forgotten. Each reload returns the keys whose desired state changed, and the
store answers, per key, what the config wants of it and whether nvirtd may act on
it now (`wanted`). What broken files may declare is swapped in together with the
desired state it was read with: a worker between the read and the swap never sees
one without the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

import structlog

from .configfiles import ConfigReader, DirectoryProblem, may_declare
from .core import placement
from .core.config import merge
from .core.desired import Rendered, changed_keys, render_all
from .core.domain_xml import RenderContext
from .core.keys import Key, Kind
from .core.record import Wanted
from .core.spec import ConfigFile, DesiredPower, DiskType
from .core.start_order import dependents_of
from .declared import write_declared
from .runtime import clock
from .settings import Settings
from .status import StatusStore

log = structlog.get_logger("nvirtd")


@dataclass(frozen=True, slots=True)
class Reloaded:
    rendered: Rendered | None  # None: the directory could not be read; everything stays as it was
    keys: set[Key]  # whose desired state changed (every nix-disk domain too, on an explicit reload)
    errors: list[str]
    nix_paths: set[str]  # configurations whose builds are to be evaluated again
    broken_changed: bool = False  # the broken files (or their texts) changed: what they held may go now


DRAINED_FILE = "drained"  # in the state directory, written by `nvirtd drain`


def is_drained(state_dir: str) -> bool:
    return os.path.exists(os.path.join(state_dir, DRAINED_FILE))


class ConfigStore:
    def __init__(self, settings: Settings, status: StatusStore) -> None:
        self.settings = settings
        self.status = status
        self.reader = ConfigReader(settings.config_dir, trust_checks=settings.trust_checks)
        self.desired: Rendered | None = None
        self.ctx: RenderContext | None = None  # set once libvirt said which virt type it runs
        self._last_good: dict[str, ConfigFile] = {}
        self._may_declare: Callable[[str], str | None] = lambda name: None
        self._broken: dict[str, str] = {}
        # startAfter of every domain declared now, and of those removed since (until a new one has the
        # name): a removal stops dependents first, which only the last config that had them knows
        self._after: dict[str, tuple[str, ...]] = {}
        self.elsewhere: dict[str, str] = {}  # a fleet's domains placed on other hosts: name -> host
        self._elsewhere_rendered: dict[str, Any] = {}
        self._evacuated: set[str] = set()  # `nvirtd drain`: this host's domains that go to an alternative
        self._dependents: dict[str, tuple[str, ...]] = {}

    async def reload(self, *, explicit: bool) -> Reloaded:
        started = clock.wall()
        files, problem = await asyncio.to_thread(self.reader.read)
        self.status.warnings = [str(s) for s in self.reader.skipped]
        for skipped in self.reader.skipped:
            log.warning("config_file_skipped", file=skipped.file, reason=skipped.reason)
        if problem is not None:
            return self._unreadable(problem)
        result = self.render(files, explicit=explicit)
        rendered = result.rendered
        assert rendered is not None
        write_declared(self.settings.state_dir, rendered)
        for kind, objs in (("domain", rendered.domains), ("network", rendered.networks)):
            for name, obj in objs.items():  # `nvirtd status` lists new ones at once, as pending
                if (kind, name) not in self.status.entries:
                    self.status.update(kind, name, phase="pending", file=obj.source_file)
        errors = [str(e) for e in rendered.all_errors]
        self.status.config_errors = errors
        for err in errors:
            log.error("config_error", error=err)
        log.info("config_loaded", files=len(files), domains=len(rendered.domains),
                 networks=len(rendered.networks), changed=len(result.keys), errors=len(errors),
                 ms=round((clock.wall() - started) * 1000, 1))
        return result

    def render(self, files: dict, *, explicit: bool = False) -> Reloaded:
        """Merge and render files just read (`nvirtd plan` calls this alone: it writes nothing)."""
        state = merge(files, self._last_good)
        # a broken (or held) file keeps its last good content; a deleted file is forgotten
        self._last_good = {n: f.config if n not in state.broken_files else self._last_good[n]  # type: ignore[misc]
                           for n, f in files.items() if n not in state.broken_files or n in self._last_good}
        previous = self.desired
        assert self.ctx is not None
        rendered = render_all(state, self.ctx, previous)
        # a fleet's config: the domains placed on other hosts are theirs (checked fleet-wide above)
        self.elsewhere = placement.placed_elsewhere(rendered.domains, self.settings.host)
        moves, stops = placement.drained(rendered.domains, self.settings.host, [h for h, _ in self.settings.peers]
                                         ) if is_drained(self.settings.state_dir) else ({}, set())
        self.elsewhere.update(moves)  # while drained: placed on its first alternative
        self._evacuated = set(moves)
        if stops:  # while drained: stopped, and no autostart (started again once no longer drained)
            rendered = dataclasses.replace(rendered, domains={n: dataclasses.replace(d, spec=d.spec.model_copy(
                update={"state": DesiredPower.stopped})) if n in stops else d for n, d in rendered.domains.items()})
        # kept apart: their rendering is what a domain moving here or away is compared with
        self._elsewhere_rendered = {n: d for n, d in rendered.domains.items() if n in self.elsewhere}
        if self.elsewhere:
            rendered = dataclasses.replace(rendered, domains={n: d for n, d in rendered.domains.items()
                                                              if n not in self.elsewhere})
        keys = changed_keys(previous, rendered)
        nix_paths = nix_configs(rendered, None if explicit else keys)
        if explicit:  # `systemctl reload`: evaluate every nix disk again (its inputs may have changed)
            keys |= {Key(Kind.domain, n) for n, d in rendered.domains.items()
                     if any(k.type == DiskType.nix for k in d.spec.disks.values())}
        broken = dict(self.reader.broken_texts)
        # a broken file's text, or what else holds objects back, changed: the held ones are decided again
        changed = broken != self._broken or previous is None or rendered.holding != previous.holding
        self._broken, self._may_declare = broken, functools.partial(may_declare, broken)
        self.desired = rendered
        now = {n: tuple(d.spec.start_after) for n, d in rendered.domains.items()}
        self._after = {**{n: a for n, a in self._after.items() if n not in now}, **now}
        self._dependents = dependents_of(self._after)
        return Reloaded(rendered, keys, [str(e) for e in rendered.all_errors], nix_paths, broken_changed=changed)

    def _unreadable(self, problem: DirectoryProblem) -> Reloaded:
        # never read a missing or untrusted directory as "no VMs": keep everything
        log.error("config_directory_problem", error=problem.message)
        self.status.config_errors = [problem.message]
        return Reloaded(None, set(), [problem.message], set())

    def declared(self, key: Key) -> object | None:
        desired = self.desired
        if desired is None:
            return None
        if key.kind == Kind.domain:
            return desired.domains.get(key.name) or self._elsewhere_rendered.get(key.name)
        return desired.networks.get(key.name)

    def placed_elsewhere(self, name: str) -> str | None:
        """The host a fleet's config places domain `name` on, when it is not this one."""
        return self.elsewhere.get(name)

    def wanted(self, key: Key, obj: object | None, owner_file: str | None) -> Wanted:
        """What the config wants of `key` (obj: declared(key) when it was observed), and
        whether nvirtd may act on it now. `owner_file`: the file libvirt's object says it
        came from, which holds a removal while that file is broken."""
        desired, instance = self.desired, self.settings.instance
        source = getattr(obj, "source_file", None) or owner_file
        if desired is None:  # no config read yet: hold everything
            return Wanted(key.name, obj, source, held=True, instance=instance)
        if key.kind == Kind.domain and key.name in self.elsewhere:
            return Wanted(key.name, obj, source, instance=instance, elsewhere=self.elsewhere[key.name],
                          host=self.settings.host, drained=key.name in self._evacuated)
        conflict = (key.kind.value, key.name) in desired.state.conflicts
        held = not conflict and desired.held(key.kind.value, key.name, source)
        if obj is None and owner_file is not None and self._may_declare(key.name) is not None:
            held = True  # removed from its file, but a broken file may declare it now: wait for it
        users: tuple[str, ...] = ()
        errors: tuple[str, ...] = ()
        if key.kind == Kind.network:
            users = tuple(sorted(d for d, r in desired.domains.items()
                                 if any(n.network == key.name for n in r.spec.interfaces.values())))
        elif source is not None:
            errors = tuple(str(e) for e in desired.all_errors if e.file == source and e.about("domain", key.name))
        return Wanted(key.name, obj, source, held=held, conflict=conflict, instance=instance, host=self.settings.host,
                      users=users, config_errors=errors)

    def start_order(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the domains `name` starts after, the domains that start after it). A held file's last
        good content may still name the domain itself, or a domain that names it back: neither
        is waited for (a removal would wait for itself)."""
        after = tuple(d for d in self._after.get(name, ()) if d != name)
        return after, tuple(d for d in self._dependents.get(name, ()) if d != name and d not in after)

    def waiting_on_build(self, config_path: str) -> list[Key]:
        """Domains whose nix disks use `config_path` (looked at again when its build ends)."""
        if self.desired is None:
            return []
        return [Key(Kind.domain, name) for name, d in self.desired.domains.items()
                if any(disk.type == DiskType.nix and disk.build_source == config_path
                       for disk in d.spec.disks.values())]

    def all_keys(self) -> set[Key]:
        desired = self.desired
        if desired is None:
            return set()
        return {Key(Kind.domain, n) for n in desired.domains} | {Key(Kind.network, n) for n in desired.networks}


def nix_configs(rendered: Rendered, keys: set[Key] | None) -> set[str]:
    return {disk.build_source for name, d in rendered.domains.items() if keys is None or Key(Kind.domain, name) in keys
            for disk in d.spec.disks.values() if disk.type == DiskType.nix}
