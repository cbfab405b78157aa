"""Domain spec -> libvirt domain XML, built with ElementTree (never string templates).

PURE: standard library only (plus the spec models).

The rendered XML is deterministic for a given spec and context; its hash (taken
before the ownership metadata is attached) is the domain's spec hash.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from . import identity
from .cloud_seed import Seed, render_seed
from .live_changes import Device, LiveParts
from .ownership import DEFAULT_INSTANCE, Owner, digest_of, owned_text
from .xmlbuild import RenderedXml, serialize, sub
from .spec import DesiredPower, Disk, DiskDevice, DiskType, Domain, Firmware, VirtType
from .spec_devices import CPU_MODES, Hostdev, HostdevType

BUS_BY_PREFIX = {"vd": "virtio", "sd": "sata", "hd": "ide", "xvd": "xen"}
SEED_ALIAS = "ua-nvirtd-seed"  # the seed CD-ROM's (spec.py refuses a disk whose alias it would be)


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Host facts and daemon settings the XML depends on."""

    virt_type: VirtType  # resolved default: kvm or qemu (never auto)
    images_dir: str
    state_dir: str
    instance: str = DEFAULT_INSTANCE  # recorded in the owner element


@dataclass(frozen=True)
class RenderedDomain(RenderedXml):
    spec: Domain
    macs: dict[str, str] = field(compare=False, repr=False, default_factory=dict, kw_only=True)  # NIC -> MAC
    restart_hash: str = field(compare=False, repr=False, default="", kw_only=True)
    live: LiveParts = field(compare=False, repr=False, default_factory=LiveParts, kw_only=True)
    # the XML of each hot-pluggable device, as attach-device gives it to libvirt
    device_xml: dict[str, str] = field(compare=False, repr=False, default_factory=dict, kw_only=True)
    seed: Seed | None = field(compare=False, repr=False, default=None, kw_only=True)  # the cloud-init seed

    @property
    def autostart(self) -> bool:
        """libvirt's autostart follows `state`, except for a domain with startAfter: libvirt
        would start it at boot with the others, in no order; nvirtd starts it once they run."""
        return self.spec.state == DesiredPower.running and not self.spec.start_after


def assign_targets(disks: dict[str, Disk]) -> dict[str, str]:
    """Give each disk its target: the one it names, else the next free vdX (sdX for cdroms)."""
    used = {d.target for d in disks.values() if d.target}
    targets: dict[str, str] = {}
    for disk_name, disk in disks.items():
        if disk.target:
            targets[disk_name] = disk.target
            continue
        prefix = "sd" if disk.device == DiskDevice.cdrom else "vd"
        for letter in "abcdefghijklmnopqrstuvwxyz":
            candidate = prefix + letter
            if candidate not in used:
                used.add(candidate)
                targets[disk_name] = candidate
                break
        else:
            raise ValueError("more than 26 disks without an explicit target")
    return targets


def bus_for(target: str) -> str:
    for prefix, bus in sorted(BUS_BY_PREFIX.items(), key=lambda kv: -len(kv[0])):
        if target.startswith(prefix):
            return bus
    return "virtio"


def console_log_path(state_dir: str, name: str) -> str:
    return str(PurePosixPath(state_dir) / "console" / f"{name}.log")


def render_domain(name: str, spec: Domain, ctx: RenderContext, *, source_file: str) -> RenderedDomain:
    uuid = identity.domain_uuid(name, spec.uuid)
    virt_type = spec.virt_type if spec.virt_type not in (None, VirtType.auto) else ctx.virt_type
    root = ET.Element("domain", type=str(virt_type))
    sub(root, "name", name)
    sub(root, "uuid", uuid)
    memory, cpu = spec.memory, spec.cpu
    # with a declared max, the guest is defined at its max and runs with `amount` (live parts)
    sub(root, "memory", str(memory.max if memory.max is not None else memory.amount), unit=memory.unit.value)
    current_memory = None
    if memory.max is not None:
        current_memory = sub(root, "currentMemory", str(memory.amount), unit=memory.unit.value)
    if cpu.max is not None:
        sub(root, "vcpu", str(cpu.max), current=str(cpu.amount))
    else:
        sub(root, "vcpu", str(cpu.amount))
    _tuning(root, spec)
    _os(root, spec)
    features = sub(root, "features")
    sub(features, "acpi")
    sub(features, "apic")
    sub(root, "clock", offset="utc")
    sub(root, "on_poweroff", "destroy")
    sub(root, "on_reboot", "restart")
    sub(root, "on_crash", "destroy")
    devices = sub(root, "devices")
    targets = assign_targets(dict(spec.disks))
    pluggable: dict[str, tuple[ET.Element, str]] = {}  # "nic:NAME" / "disk:NAME" -> (element, its live ident)
    for disk_name, disk in spec.disks.items():
        el = _disk(devices, name, disk_name, disk, targets[disk_name], ctx)
        if _hot_pluggable(disk, targets[disk_name]):
            pluggable[f"disk:{disk_name}"] = (el, disk_alias(disk_name))
    seed = None
    if spec.cloud_init is not None:
        seed = render_seed(ctx.images_dir, name, uuid, spec.cloud_init)
        _seed_cdrom(devices, seed, set(targets.values()))
    for tag, share in spec.shares.items():
        fs = sub(devices, "filesystem", type="mount", accessmode="passthrough")
        sub(fs, "driver", type="virtiofs")
        sub(fs, "source", dir=share.path)
        sub(fs, "target", dir=tag)
        if share.read_only:
            sub(fs, "readonly")
    macs = {}
    for nic_name, nic in spec.interfaces.items():
        iface = sub(devices, "interface", type="network" if nic.network else "bridge")
        macs[nic_name] = identity.interface_mac(uuid, nic_name, nic.mac)
        sub(iface, "mac", address=macs[nic_name])
        if nic.network:
            sub(iface, "source", network=nic.network)
        else:
            sub(iface, "source", bridge=nic.bridge)  # type: ignore[arg-type]
        sub(iface, "model", type=nic.model)
        pluggable[f"nic:{nic_name}"] = (iface, macs[nic_name])
    for dev_name, dev in spec.hostdevs.items():
        _hostdev(devices, dev_name, dev)
    serial = sub(devices, "serial", type="pty")
    if spec.console_log:
        sub(serial, "log", file=console_log_path(ctx.state_dir, name), append="on")
    sub(serial, "target", port="0")
    console = sub(devices, "console", type="pty")
    sub(console, "target", type="serial", port="0")
    channel = sub(devices, "channel", type="unix")
    sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    if spec.enable_vnc:
        sub(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    if spec.tpm:
        tpm = sub(devices, "tpm", model="tpm-crb")
        sub(tpm, "backend", type="emulator", version="2.0")
    rng = sub(devices, "rng", model="virtio")
    sub(rng, "backend", "/dev/urandom", model="random")

    text = serialize(root)  # once: the spec hash is of this text, and libvirt gets it with the owner
    digest = digest_of(text)
    # the restart hash: the same text without what a running guest can take live (cut out of
    # the text, which the same writer made: no second serialisation of the whole tree)
    rest, device_xml, live_devices = text, {}, {}
    if cpu.max is not None:
        rest = rest.replace(f'<vcpu current="{cpu.amount}">', "<vcpu>", 1)
    if current_memory is not None:
        rest = rest.replace(serialize(current_memory), "", 1)
    for key, (el, ident) in pluggable.items():
        piece = serialize(el)
        rest = rest.replace(piece, "", 1)
        device_xml[key] = piece
        live_devices[key] = Device(digest_of(piece)[:12], ident)
    live = LiveParts(cpu.amount if cpu.max is not None else None,
                     memory.bytes // 1024 if memory.max is not None else None, live_devices)
    restart_hash = digest_of(rest)
    owner = Owner(file=source_file, spec_hash=digest, instance=ctx.instance, shutdown_timeout=spec.shutdown_timeout,
                  restart_hash=restart_hash, live=live.encode())
    return RenderedDomain(name=name, uuid=uuid, spec_hash=digest, source_file=source_file, spec=spec,
                          xml=owned_text(text, owner), owner=owner, macs=macs, restart_hash=restart_hash,
                          live=live, device_xml=device_xml, seed=seed)


def _seed_cdrom(devices: ET.Element, seed: Seed, used: set[str]) -> None:
    """The seed as a CD-ROM on virtio-scsi: cloud kernels (Debian's) lack AHCI, and IDE is
    not on q35; every cloud image has virtio-scsi."""
    sub(devices, "controller", type="scsi", model="virtio-scsi")
    target = next(f"sd{c}" for c in "abcdefghijklmnopqrstuvwxyz" if f"sd{c}" not in used)
    el = sub(devices, "disk", type="file", device="cdrom")
    sub(el, "driver", name="qemu", type="raw")
    sub(el, "source", file=seed.path)
    sub(el, "target", dev=target, bus="scsi")
    sub(el, "readonly")
    sub(el, "alias", name=SEED_ALIAS)


def disk_alias(disk_name: str) -> str:
    """The user alias a disk has in libvirt (how a live unplug names it)."""
    return "ua-" + disk_name.replace(".", "-")


def _hot_pluggable(disk: Disk, target: str) -> bool:
    """A virtio data disk is plugged into (and pulled out of) a running guest; SATA, IDE,
    cdroms and vvfat cannot be. What the guest may boot from never is: a nix disk (the
    OS image), a disk with a boot order, and the first disk (vda)."""
    return (disk.device == DiskDevice.disk and disk.type in (DiskType.file, DiskType.block, DiskType.volume)
            and disk.boot_order is None and target != "vda" and bus_for(target) == "virtio")


def _tuning(root: ET.Element, spec: Domain) -> None:
    """Memory backing, CPU pinning, the CPU model, topology and NUMA cells: nothing at all
    unless asked for (an unchanged domain keeps its XML, hence its spec hash)."""
    cpu, hugepages = spec.cpu, spec.memory.hugepages
    if spec.shares or hugepages is not None:
        backing = sub(root, "memoryBacking")
        if hugepages is not None:
            sub(sub(backing, "hugepages"), "page", size=str(hugepages.size), unit=hugepages.unit)
        if spec.shares:  # virtiofs needs guest memory the virtiofsd process can map
            sub(backing, "source", type="memfd")
            sub(backing, "access", mode="shared")
    if cpu.pin or cpu.emulator_pin:
        tune = sub(root, "cputune")
        for vcpu, cpuset in sorted(cpu.pin.items(), key=lambda item: int(item[0])):
            sub(tune, "vcpupin", vcpu=str(int(vcpu)), cpuset=cpuset)
        if cpu.emulator_pin:
            sub(tune, "emulatorpin", cpuset=cpu.emulator_pin)
    if cpu.model is None and cpu.topology is None and not spec.numa:
        return
    if cpu.model in CPU_MODES:
        el = sub(root, "cpu", mode=cpu.model)
    elif cpu.model is not None:
        el = sub(root, "cpu", mode="custom", match="exact")
        sub(el, "model", cpu.model, fallback="forbid")
    else:
        el = sub(root, "cpu")
    if cpu.topology is not None:
        t = cpu.topology
        sub(el, "topology", sockets=str(t.sockets), dies="1", cores=str(t.cores), threads=str(t.threads))
    if spec.numa:
        numa = sub(el, "numa")
        for i, cell in enumerate(spec.numa):
            sub(numa, "cell", id=str(i), cpus=cell.cpus, memory=str(cell.memory), unit="MiB")


def _hostdev(devices: ET.Element, dev_name: str, dev: Hostdev) -> None:
    el = sub(devices, "hostdev", mode="subsystem", type=dev.type.value, managed="yes")
    source = sub(el, "source")
    if dev.type == HostdevType.pci:
        domain, bus, slot, function = dev.pci_address
        sub(source, "address", domain=f"0x{domain}", bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{function}")
    elif dev.vendor is not None:
        sub(source, "vendor", id=dev.vendor.lower())
        sub(source, "product", id=str(dev.product).lower())
    else:
        bus, device = str(dev.address).split(".")
        sub(source, "address", bus=str(int(bus)), device=str(int(device)))
    sub(el, "alias", name="ua-hostdev-" + dev_name.replace(".", "-"))


def _os(root: ET.Element, spec: Domain) -> None:
    os_el = sub(root, "os")
    if spec.firmware == Firmware.efi:
        os_el.set("firmware", "efi")
    sub(os_el, "type", "hvm", arch="x86_64")
    if spec.boot is not None:
        sub(os_el, "kernel", spec.boot.kernel)
        if spec.boot.initrd:
            sub(os_el, "initrd", spec.boot.initrd)
        if spec.boot.cmdline:
            sub(os_el, "cmdline", spec.boot.cmdline)


def _disk(devices: ET.Element, domain: str, disk_name: str, disk: Disk, target: str,
          ctx: RenderContext) -> ET.Element:
    source_type = {DiskType.nix: "file", DiskType.image: "file", DiskType.file: "file", DiskType.block: "block",
                   DiskType.dir: "dir", DiskType.volume: "volume"}[disk.type]
    el = sub(devices, "disk", type=source_type, device=disk.device.value)
    sub(el, "driver", name=disk.driver.name.value, type=disk.format.value)
    if disk.overlaid:
        sub(el, "source", file=identity.overlay_path(ctx.images_dir, domain, disk_name))
    elif disk.type == DiskType.file:
        sub(el, "source", file=disk.path)
    elif disk.type == DiskType.block:
        sub(el, "source", dev=disk.path)
    elif disk.type == DiskType.dir:
        sub(el, "source", dir=disk.path)
    else:
        pool, volume = disk.path.split("/", 1)
        sub(el, "source", pool=pool, volume=volume)
    sub(el, "target", dev=target, bus=bus_for(target))
    if disk.boot_order is not None:
        sub(el, "boot", order=str(disk.boot_order))
    if disk.read_only or disk.device == DiskDevice.cdrom:
        sub(el, "readonly")
    sub(el, "alias", name=disk_alias(disk_name))
    return el
