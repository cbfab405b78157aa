"""The config format: what an administrator may write in /etc/nvirt.d/*.json.

PURE: imports only the standard library and pydantic.

Option names follow the NixOS module nvirtd grew out of (camelCase, nested the
same way: `cpu.amount`, `memory.unit`, `enableVnc`, `disks.<d>.driver.type`, ...).
Every model forbids unknown keys and is frozen, so a validated spec can be shared
and hashed without copying. Cross-field rules live in validators here, so that
`nvirtd check` reports them with the file and the JSON path like any other error.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from .network_spec import ForwardMode, Network
from .spec_devices import Hostdev, NumaCell, tuning_problems
from .spec_fleet import Evacuate, Migration
from .spec_images import MAX_DISK_BYTES, CloudInit, ImageChangePolicy, Overlay, SizeUnit
from .spec_resources import MAX_MEMORY_BYTES, MIN_MEMORY_BYTES, Cpu, Memory, MemoryUnit
from .spec_base import (BRIDGE_PATTERN, MAC_PATTERN, NAME_PATTERN, NAMED_INTERVALS, TARGET_PATTERN, AbsPath, IPv4,
                        IPv6, Model, Name, parse_duration)

__all__ = ["ForwardMode", "Network", "IPv4", "IPv6", "Model", "Name", "NAME_PATTERN", "Cpu", "Memory", "MemoryUnit",
           "MIN_MEMORY_BYTES", "MAX_MEMORY_BYTES",
           "MAX_DISK_BYTES", "ImageChangePolicy", "SizeUnit"]


class DiskType(StrEnum):
    nix = "nix"
    image = "image"  # a qcow2 overlay on a base image outside the nix store (a cloud image)
    file = "file"
    block = "block"
    dir = "dir"
    volume = "volume"


class DiskDevice(StrEnum):
    disk = "disk"
    cdrom = "cdrom"


class DriverName(StrEnum):
    qemu = "qemu"
    tap = "tap"
    tap2 = "tap2"
    phy = "phy"
    file = "file"


class DriverType(StrEnum):
    aio = "aio"
    raw = "raw"
    bochs = "bochs"
    qcow2 = "qcow2"
    qed = "qed"
    fat = "fat"


class DesiredPower(StrEnum):
    running = "running"
    stopped = "stopped"


class VirtType(StrEnum):
    auto = "auto"
    kvm = "kvm"
    qemu = "qemu"


class Firmware(StrEnum):
    bios = "bios"
    efi = "efi"


class Driver(Model):
    name: DriverName = Field(strict=False, default=DriverName.qemu, description="Hypervisor driver of the disk.")
    type: DriverType | None = Field(
        None, strict=False, description="Image format; default qcow2 for nix disks, fat for dir, raw otherwise."
    )


FLAKE_PATTERN = r"^[^\s#-][^\s#]*#[A-Za-z0-9_][A-Za-z0-9_.'-]*$"
CONFIGURATION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_'-]*$"
# what a nix disk's image is, in a NixOS configuration (NixOS 25.05 and later: nixpkgs' image builder)
IMAGE_ATTRIBUTE = "config.system.build.images.qemu"


class NixImage(Overlay):
    flake: str | None = Field(
        None, description="Build a flake's NixOS configuration instead of a file: FLAKEREF#NAME is "
        f"nixosConfigurations.NAME.{IMAGE_ATTRIBUTE} (FLAKEREF#ATTR.PATH: that attribute, any qcow2 image); "
        "`path` is then left out."
    )
    attribute: str | None = Field(
        None, description="With `path` a flake's directory: build its nixosConfigurations.ATTRIBUTE "
        "(the same as flake PATH#ATTRIBUTE)."
    )

    @model_validator(mode="after")
    def _flake_ref(self) -> Self:
        if self.flake is not None and self.attribute is not None:
            raise ValueError("@attribute: give either flake (FLAKEREF#NAME) or path with attribute, not both")
        if self.flake is not None and not re.fullmatch(FLAKE_PATTERN, self.flake):
            raise ValueError(f"@flake: {self.flake!r} is not FLAKEREF#NAME (e.g. /etc/nixos#web: the flake's "
                             "nixosConfigurations.web), without spaces, not starting with '-'")
        if self.attribute is not None and not re.fullmatch(CONFIGURATION_PATTERN, self.attribute):
            raise ValueError(f"@attribute: {self.attribute!r} is not a configuration name (letters, digits, _ ' -)")
        return self

    def installable(self, path: str | None) -> str | None:
        """The flake installable `nix build` is given, or None for a configuration file."""
        ref = self.flake if self.flake is not None else (
            f"{path}#{self.attribute}" if self.attribute is not None else None)
        if ref is None:
            return None
        flake, fragment = ref.rsplit("#", 1)
        return ref if "." in fragment else f"{flake}#nixosConfigurations.{fragment}.{IMAGE_ATTRIBUTE}"


class Disk(Model):
    type: DiskType = Field(strict=False, description="Where the disk comes from.")
    device: DiskDevice = Field(strict=False, default=DiskDevice.disk, description="How the guest sees it.")
    driver: Driver = Field(default_factory=Driver, description="libvirt's <driver> of the disk.")
    path: str | None = Field(
        None, description="nix: a NixOS configuration file (or, with nix.attribute, a flake's directory; "
        "left out with nix.flake); image: the base image (qcow2 or raw; a cloud image); file/block/dir: an "
        "absolute host path; volume: POOL/VOLUME."
    )
    target: Annotated[str, Field(pattern=TARGET_PATTERN)] | None = Field(
        None, description="Guest device name (vda, sdb, ...); default: next free vdX (sdX for cdrom)."
    )
    read_only: bool = Field(False, description="Attach read-only (cdroms always are).")
    nix: NixImage | None = Field(None, description="Overlay settings of a nix disk.")
    image: Overlay | None = Field(None, description="Overlay settings of an image disk (its base is `path`, "
                                  "opened read-only; never changed, never collected).")
    boot_order: int | None = Field(None, ge=1, le=2**32 - 1, description="Boot priority, 1 first.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        flake = self.nix is not None and self.nix.flake is not None
        if self.type == DiskType.nix and flake:
            if self.path is not None:
                raise ValueError("@path: a disk built from nix.flake has no path (give either, not both)")
            return self._nix_disk()
        if self.path is None:
            raise ValueError("@path: required option is missing" + (" (or give nix.flake)" if self.type == DiskType.nix else ""))
        if self.type == DiskType.volume:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.+-]+", self.path):
                raise ValueError(f"@path: a volume disk's path is POOL/VOLUME, not {self.path!r}")
        elif not self.path.startswith("/"):
            raise ValueError(f"@path: {self.path!r} is not an absolute path")
        if self.type == DiskType.nix:
            return self._nix_disk()
        if self.nix is not None:
            raise ValueError("@nix: 'nix' settings only apply to disks of type nix")
        if self.type == DiskType.image:
            return self._nix_disk("an image")
        if self.image is not None:
            raise ValueError("@image: 'image' settings only apply to disks of type image")
        return self

    def _nix_disk(self, kind: str = "a nix") -> Self:
        if self.driver.type not in (None, DriverType.qcow2):
            raise ValueError(f"@driver.type: {kind} disk is a qcow2 overlay: driver.type must be qcow2")
        if self.device != DiskDevice.disk:
            raise ValueError(f"@device: {kind} disk must have device 'disk'")
        if kind == "a nix" and self.image is not None:
            raise ValueError("@image: 'image' settings only apply to disks of type image (nix disks have 'nix')")
        return self

    @property
    def overlay(self) -> Overlay | None:
        """The overlay settings of a nix or image disk."""
        return self.nix if self.type == DiskType.nix else self.image

    @property
    def overlaid(self) -> bool:
        """Whether nvirtd gives the disk a qcow2 overlay of its own (nix and image disks)."""
        return self.type in (DiskType.nix, DiskType.image)

    @property
    def build_source(self) -> str:
        """What a nix disk's image is built from, and what its build is known by: the
        configuration file, or the flake installable."""
        installable = self.nix.installable(self.path) if self.nix is not None else None
        return installable if installable is not None else str(self.path)

    @property
    def is_flake(self) -> bool:
        return self.nix is not None and self.nix.installable(self.path) is not None

    @property
    def format(self) -> DriverType:
        if self.driver.type is not None:
            return self.driver.type
        if self.overlaid:
            return DriverType.qcow2
        if self.type == DiskType.dir:
            return DriverType.fat
        return DriverType.raw


class BackupSchedule(Model):
    every: str = Field("daily", description="How often: hourly, daily, weekly, or a duration (12h, 30m).")
    keep: int = Field(7, ge=1, le=10000, description="Backups kept; the newest complete one is never deleted.")
    to: AbsPath = Field("/var/backups/nvirtd", description="Backups go to TO/NAME/UTC-TIME/ (as `nvirtd backup`).")

    @property
    def interval(self) -> float:
        return NAMED_INTERVALS.get(self.every) or parse_duration(self.every) or 0.0

    @model_validator(mode="after")
    def _sane_interval(self) -> Self:
        try:
            seconds = NAMED_INTERVALS.get(self.every) or parse_duration(self.every)
        except ValueError as exc:
            raise ValueError(f"@every: {exc}, or hourly, daily, weekly") from None
        if seconds is None or seconds < 60:
            raise ValueError(f"@every: {self.every!r}: backups at most once a minute (and not never: "
                             "remove `backup` to stop them)")
        return self


class Interface(Model):
    network: Name | None = Field(None, description="A libvirt network (nvirtd's or existing).")
    bridge: Annotated[str, Field(pattern=BRIDGE_PATTERN)] | None = Field(
        None, description="An existing host bridge."
    )
    mac: Annotated[str, Field(pattern=MAC_PATTERN)] | None = Field(
        None, description="Default: derived from the domain UUID and the NIC name (52:54:00:...)."
    )
    model: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$")] = Field("virtio", description="NIC model (virtio, e1000, ...).")

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.network is None) == (self.bridge is None):
            raise ValueError("give exactly one of 'network' and 'bridge'")
        return self


class Boot(Model):
    kernel: AbsPath = Field(description="Kernel image on the host (direct kernel boot).")
    initrd: AbsPath | None = Field(None, description="Initramfs on the host.")
    cmdline: str | None = Field(None, max_length=4096, description="Kernel command line (e.g. console=ttyS0).")


class Share(Model):
    path: AbsPath = Field(description="Host directory shared with the guest (virtiofs, needs virtiofsd).")
    read_only: bool = Field(False, description="Read-only share (libvirt >= 10.x; older libvirt refuses).")


HOST_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"


class Domain(Model):
    host: Annotated[str, Field(pattern=HOST_PATTERN, max_length=253)] | None = Field(
        None, description="The fleet host it runs on (`nvirtd run --host`, default: the host name). Every host "
        "reads the same files and manages the domains placed on it; once one domain names a host, one without "
        "is placed nowhere. Not part of the definition.")
    hosts: list[Annotated[str, Field(pattern=HOST_PATTERN, max_length=253)]] = Field(
        default_factory=list, description="Where it goes while its `host` is drained (`nvirtd drain`): the first "
        "of these hosts that is a peer, by live migration. Not part of the definition.")
    evacuate: Evacuate = Field(
        strict=False, default=Evacuate.migrate, description="What `nvirtd drain` does with it: migrate (to the "
        "first of `hosts`) or stop (started again once the host is no longer drained).")
    migration: Migration = Field(
        default_factory=Migration, description="How it moves when its `host` changes while it runs: a live "
        "migration with its overlays. Not part of the definition.")
    uuid: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")] | None = Field(
        None, description="Default: derived from the name, stable."
    )
    cpu: Cpu = Field(default_factory=Cpu, description="Virtual CPUs.")
    memory: Memory = Field(description="Guest memory (at least 16 MiB).")
    enable_vnc: bool = Field(False, description="VNC console on 127.0.0.1, port chosen by libvirt.")
    state: DesiredPower = Field(strict=False, default=DesiredPower.running, description="running or stopped; autostart follows.")
    restart_on_change: bool = Field(
        False, description="Restart a running domain when its definition changes (else restart-required)."
    )
    shutdown_timeout: int = Field(120, ge=0, le=86400, description="Seconds of ACPI shutdown before destroy.")
    virt_type: VirtType | None = Field(strict=False, default=None, description="Overrides the daemon's --virt-type.")
    firmware: Firmware = Field(strict=False, default=Firmware.bios, description="bios (SeaBIOS) or efi (OVMF, per-domain NVRAM).")
    tpm: bool = Field(False, description="An emulated TPM 2.0 (needs swtpm).")
    console_log: bool = Field(False, description="Log the serial console to the state dir.")
    boot: Boot | None = Field(None, description="Direct kernel boot.")
    disks: dict[Name, Disk] = Field(default_factory=dict, description="Disks by name (the name is yours).")
    interfaces: dict[Name, Interface] = Field(default_factory=dict, description="NICs by name; MACs derive from it.")
    shares: dict[Name, Share] = Field(
        default_factory=dict, description="Shared folders by mount tag: `mount -t virtiofs TAG /mnt` in the guest."
    )
    hostdevs: dict[Name, Hostdev] = Field(
        default_factory=dict, description="Host devices passed through, by name: PCI (a GPU, a NIC) or USB. "
        "One device can be given to one domain only.")
    numa: list[NumaCell] = Field(
        default_factory=list, description="NUMA cells of the guest: which vCPUs and how much memory each has.")
    start_after: list[Name] = Field(
        default_factory=list, description="Domains this one starts after: it is started only while they run (at "
        "boot, and whenever nvirtd starts it); removed together, it is stopped before them. Not part of the "
        "definition (no redefine). A cycle, or a name no file declares, is an error."
    )
    start_after_agent: bool = Field(
        False, description="With startAfter: start only once those domains' QEMU guest agent answers (guest-ping), "
        "not as soon as they run. Not part of the definition.")
    backup: BackupSchedule | None = Field(
        None, description="Scheduled backups with retention (not part of the definition: no redefine, no restart)."
    )
    cloud_init: CloudInit | None = Field(
        None, description="A NoCloud seed for a cloud image's cloud-init, attached as a CD-ROM (label cidata). "
        "A changed seed applies at the next boot (restart-required).")

    @model_validator(mode="after")
    def _tuning_fits(self) -> Self:
        problems = tuning_problems(self.cpu.most, self.memory.most_bytes, self.cpu.topology, self.cpu.pin,
                                   self.memory.hugepages, self.numa,
                                   count_field="cpu.max" if self.cpu.max is not None else "cpu.amount")
        if self.numa and self.memory.max is not None:
            problems.insert(0, ("memory.max", "a balloon range (memory.max) together with NUMA cells is not "
                                              "supported: the cells hold all of the memory"))
        if problems:
            raise ValueError("; ".join(f"@{field}: {reason}" for field, reason in problems[:1]))
        return self

    @model_validator(mode="after")
    def _alternatives_need_a_host(self) -> Self:
        if self.hosts and not self.host:
            raise ValueError("@hosts: the hosts it goes to while its `host` is drained; give `host` first")
        if self.host and self.host in self.hosts:
            raise ValueError(f"@hosts: {self.host!r} is its own host, not an alternative to it")
        return self

    @model_validator(mode="after")
    def _agent_needs_order(self) -> Self:
        if self.start_after_agent and not self.start_after:
            raise ValueError("@startAfterAgent: it waits for the domains of startAfter, which names none")
        return self

    @model_validator(mode="after")
    def _seed_has_its_name(self) -> Self:
        if self.cloud_init is not None:
            for disk_name in self.disks:
                if disk_name.replace(".", "-") == "nvirtd-seed":
                    raise ValueError(f"@disks.{disk_name}: the name is the cloud-init seed's; choose another")
        return self

    @model_validator(mode="after")
    def _targets_unique(self) -> Self:
        seen: dict[str, str] = {}
        for disk_name, disk in self.disks.items():
            if disk.target is None:
                continue
            if disk.target in seen:
                raise ValueError(
                    f"@disks.{disk_name}.target: disks {seen[disk.target]!r} and {disk_name!r} both use target {disk.target!r}"
                )
            seen[disk.target] = disk_name
        return self


class ConfigFile(Model):
    """One file of /etc/nvirt.d: either key may be missing."""

    domains: dict[Name, Domain] = Field(default_factory=dict)
    networks: dict[Name, Network] = Field(default_factory=dict)
