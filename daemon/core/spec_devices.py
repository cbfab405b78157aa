"""Host devices and tuning in the config format: passthrough, pinning, hugepages,
CPU model and topology, NUMA cells. PURE (standard library and pydantic).

Each model checks what it can on its own; what needs the whole domain (pins against
cpu.amount, hugepages against memory, NUMA cells against both) is `tuning_problems`,
which Domain's validator (spec.py) calls; a device two domains claim is a rule across
files (core/config.py).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator

from .spec_base import Model

PCI_PATTERN = r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$"
USB_ID_PATTERN = r"^0x[0-9a-fA-F]{4}$"
CPUSET_PATTERN = r"^\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*$"
CPU_MODEL_PATTERN = r"^[A-Za-z0-9_.+-]{1,64}$"


def _check_cpuset(value: str) -> str:
    if not re.fullmatch(CPUSET_PATTERN, value):
        raise ValueError(f"{value!r} is not a cpuset like 2, 0-3 or 0-3,^2,6")
    return value


CpuSet = Annotated[str, AfterValidator(_check_cpuset)]


def cpuset_members(cpuset: str) -> set[int]:
    """The CPUs a libvirt cpuset ("0-3,^2,6") names."""
    members: set[int] = set()
    for part in cpuset.split(","):
        exclude = part.startswith("^")
        first, _, last = part.lstrip("^").partition("-")
        span = set(range(int(first), int(last or first) + 1))
        members = members - span if exclude else members | span
    return members


class HostdevType(StrEnum):
    pci = "pci"
    usb = "usb"


class Hostdev(Model):
    """A host device given to the guest (libvirt detaches it from the host driver: managed)."""

    type: HostdevType = Field(strict=False, description="pci or usb.")
    address: str | None = Field(
        None, description="pci: the device's address, [DOMAIN:]BUS:SLOT.FUNCTION as lspci -D prints it "
        "(0000:01:00.0); usb: BUS.DEVICE (1.5), or give vendor and product instead."
    )
    vendor: Annotated[str, Field(pattern=USB_ID_PATTERN)] | None = Field(None, description="usb: vendor id, 0x1050.")
    product: Annotated[str, Field(pattern=USB_ID_PATTERN)] | None = Field(None, description="usb: product id, 0x0407.")

    @model_validator(mode="after")
    def _one_way_to_find_it(self) -> Self:
        if self.type == HostdevType.pci:
            if self.vendor is not None or self.product is not None:
                raise ValueError("@vendor: a pci device is given by its address only")
            if self.address is None or not re.fullmatch(PCI_PATTERN, self.address):
                raise ValueError(f"@address: {self.address!r} is not a PCI address like 0000:01:00.0 "
                                 "([DOMAIN:]BUS:SLOT.FUNCTION, hexadecimal, as lspci -D prints it)")
            return self
        by_id = self.vendor is not None or self.product is not None
        if by_id and (self.vendor is None or self.product is None):
            raise ValueError("@vendor: a usb device by id needs both vendor and product")
        if by_id == (self.address is not None):
            raise ValueError("@address: give a usb device either as address BUS.DEVICE or as vendor and product")
        if self.address is not None and not re.fullmatch(r"^\d{1,3}\.\d{1,3}$", self.address):
            raise ValueError(f"@address: {self.address!r} is not a USB address BUS.DEVICE like 1.5 (lsusb's numbers)")
        return self

    @property
    def pci_address(self) -> tuple[str, str, str, str]:
        """(domain, bus, slot, function) of a pci device, lower case, the domain 0000 if left out."""
        domain, bus, slot, function = re.fullmatch(PCI_PATTERN, str(self.address)).groups()  # type: ignore[union-attr]
        return (domain or "0000").lower(), bus.lower(), slot.lower(), function

    @property
    def identity(self) -> str:
        """What names the device on the host, the same however it is written (for clashes)."""
        if self.type == HostdevType.pci:
            domain, bus, slot, function = self.pci_address
            return f"pci {domain}:{bus}:{slot}.{function}"
        if self.address is not None:
            bus, device = self.address.split(".")
            return f"usb {int(bus)}.{int(device)}"
        return f"usb {str(self.vendor).lower()}:{str(self.product).lower()}"


CPU_MODES = ("host-passthrough", "host-model")  # cpu.model values that are modes, not named models


class Topology(Model):
    sockets: int = Field(1, ge=1, le=64, description="Sockets.")
    cores: int = Field(1, ge=1, le=512, description="Cores per socket.")
    threads: int = Field(1, ge=1, le=8, description="Threads per core.")

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores * self.threads


class Hugepages(Model):
    size: int = Field(2, ge=1, description="Size of one page, in `unit` (2 MiB, or 1 GiB on hosts that have them).")
    unit: str = Field("MiB", pattern=r"^(KiB|MiB|GiB)$", description="KiB, MiB or GiB.")

    @property
    def bytes(self) -> int:
        return self.size * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[self.unit]


class NumaCell(Model):
    cpus: CpuSet = Field(description="The guest's vCPUs in this cell, a cpuset like 0-3.")
    memory: int = Field(ge=1, description="The cell's memory, in MiB.")


def tuning_problems(amount: int, memory_bytes: int, topology: Topology | None, pins: dict[str, str],
                    hugepages: Hugepages | None, numa: list[NumaCell], *, count_field: str = "cpu.amount"
                    ) -> list[tuple[str, str]]:
    """(field, reason) for each way the tuning does not fit the domain's CPUs and memory
    (`amount` is the most vCPUs it may have: `count_field`, cpu.max when declared)."""
    problems = []
    if topology is not None and topology.cpus != amount:
        problems.append(("cpu.topology", f"{topology.sockets} sockets x {topology.cores} cores x "
                                         f"{topology.threads} threads is {topology.cpus} CPUs, not {count_field} {amount}"))
    for vcpu in pins:
        if int(vcpu) >= amount:
            problems.append((f"cpu.pin.{vcpu}", f"there is no vCPU {vcpu}: {count_field} is {amount} (0 to {amount - 1})"))
    if hugepages is not None and hugepages.bytes > memory_bytes:
        problems.append(("memory.hugepages.size", f"one page of {hugepages.size} {hugepages.unit} is more than the "
                                                  "guest's memory"))
    elif hugepages is not None and memory_bytes % hugepages.bytes:
        problems.append(("memory.hugepages.size", f"the guest's memory is not a whole number of "
                                                  f"{hugepages.size} {hugepages.unit} pages"))
    if numa:
        seen: set[int] = set()
        for i, cell in enumerate(numa):
            cpus = cpuset_members(cell.cpus)
            if cpus & seen:
                problems.append((f"numa.{i}.cpus", f"vCPUs {sorted(cpus & seen)} are in another cell too"))
            seen |= cpus
        if seen != set(range(amount)):
            problems.append(("numa", f"the cells hold vCPUs {sorted(seen)}, not each of 0 to {amount - 1} once"))
        total = sum(cell.memory for cell in numa) * 2**20
        if total != memory_bytes:
            problems.append(("numa", f"the cells hold {total // 2**20} MiB, not the guest's "
                                     f"{memory_bytes / 2**20:g} MiB"))
    return problems
