"""The steps of a schedule, as done to the world: config edits, virsh, faults.

Mixed into World (world.py), which provides the daemon, the fake hypervisor, the
simulated tools and the loop. One method per step kind: `_do_<kind>(*args)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
from pathlib import Path
from typing import Any

from daemon.adapters.fake_hypervisor import _text
from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.observed import DomainEvent
from daemon.core.ownership import Owner
from daemon.core.spec import Domain, VirtType
from daemon.errors import HypervisorError

from .schedule import VARIANTS, file_text

INSTANCE = "default"


class FaultSteps:
    config: Path
    nix_dir: Path
    hv: Any
    tools: Any
    daemon: Any
    loop: Any
    disk_full_until: float
    vclock: Any

    def _write(self, name: str, text: str) -> None:
        tmp = self.config / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.config / name)  # as an editor saves

    def _do_write(self, file: str, domains: tuple) -> None:
        self._write(file, file_text(tuple(domains), str(self.nix_dir)))

    def _do_break(self, file: str, how: str = "stub") -> None:
        """A file saved broken: its first half (a full disk, an editor that crashed), or the
        start of one that declares d0."""
        path = self.config / file
        text = path.read_text() if path.exists() else ""
        self._write(file, text[:len(text) // 2] if how == "half" and len(text) > 20 else '{"domains": {"d0": ')

    def _do_delete(self, file: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config / file)

    def _do_reload(self, explicit: bool) -> None:
        assert self.daemon is not None
        self.daemon.request_reload(explicit=explicit)

    def _do_oob_destroy(self, name: str) -> None:
        self.hv.oob_destroy(name)

    def _do_oob_undefine(self, name: str) -> None:
        self.hv.oob_undefine(name)

    def _do_oob_start(self, name: str) -> None:
        self.hv.oob_start(name)

    def _do_oob_edit(self, name: str) -> None:
        dom = self.hv._by_name(name)
        if dom is not None and dom.config is not None:
            dom.config.find("memory").text = "333"  # virsh edit: a new definition, our metadata kept
            self.hv._emit(name, DomainEvent.defined)

    def _do_foreign(self, name: str) -> None:
        self._define_other(name, None)

    def _do_other_instance(self, name: str) -> None:
        self._define_other(name, "team-b")

    def _define_other(self, name: str, instance: str | None) -> None:
        if self.hv._by_name(name) is not None:
            return
        ctx = RenderContext(VirtType.kvm, "/img", "/state", instance=instance or INSTANCE)
        rendered = render_domain(name, Domain.model_validate(VARIANTS[0]), ctx, source_file="theirs.json")
        root = rendered.tree
        if instance is None:  # made with virsh: another UUID, no owner element
            root.find("uuid").text = "00000000-0000-4000-8000-" + name.encode().hex().rjust(12, "0")
            owner = None
        else:
            owner = Owner(file="theirs.json", spec_hash=rendered.spec_hash, instance=instance)
        for meta in root.findall("metadata"):
            root.remove(meta)
        dom = self.hv.define(_text(root, owner))
        self.hv.boot(dom)

    def _do_deaf(self, name: str) -> None:
        dom = self.hv._by_name(name)
        if dom is not None:
            dom.obeys_acpi = False
            dom.releases_devices = False  # nor does it let go of an unplugged device

    def _do_drop(self) -> None:
        self.hv.drop_connection()

    def _do_libvirtd_down(self, seconds: float) -> None:
        self.hv.libvirtd_up = False
        self.hv.drop_connection()
        assert self.loop is not None
        self.loop.call_later(seconds, setattr, self.hv, "libvirtd_up", True)

    def _do_fault(self, op: str) -> None:
        self.hv.faults[op] = HypervisorError(f"injected failure of {op}")

    # ---- nix images, the store, the state disk ------------------------------------------------
    def _do_nix_edit(self) -> None:
        """The NixOS configuration changes: its next build is another image."""
        path = self.nix_dir / "vm.nix"
        path.write_text(path.read_text() + "# edited\n")

    def _do_gc(self) -> None:
        self.tools.collect_garbage()

    def _do_create_fails(self) -> None:
        self.tools.create_fails = True

    def _do_build_mode(self, mode: str) -> None:
        self.tools.build_mode = mode

    def _do_hup_storm(self) -> None:
        """systemctl reload, twenty times in a second."""
        for i in range(20):
            self.loop.call_later(i * 0.05, functools.partial(self.daemon.request_reload, explicit=True))

    def _do_events(self, mode: str) -> None:
        self.hv.event_mode = mode

    def _do_disk_full(self, seconds: float) -> None:
        self.disk_full_until = self.vclock.now + seconds

    def full_disk_write(self, real: Any) -> Any:
        """atomic_write, failing with ENOSPC while the state disk is full."""
        def write(path: Any, data: str, *args: Any, **kwargs: Any) -> None:
            if self.vclock.now < self.disk_full_until:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real(path, data, *args, **kwargs)
        return write


class EventFaults:
    """libvirt's events as a flaky link delivers them: twice, late, or out of order."""

    event_mode = "normal"
    _flip = False

    def deliver_later(self, loop: asyncio.AbstractEventLoop, deliver: Any, name: str, event: Any) -> None:
        mode = self.event_mode
        if mode == "duplicate":
            loop.call_soon(deliver, name, event)
            loop.call_soon(deliver, name, event)
        elif mode == "delay":
            loop.call_later(2.0, deliver, name, event)
        elif mode == "reorder":
            self._flip = not self._flip
            loop.call_later(0.3 if self._flip else 0.0, deliver, name, event)
        else:
            loop.call_soon(deliver, name, event)
