"""A domain's CPUs and memory: how many, how much, and how far they may change live.

PURE: imports only the standard library and pydantic (part of the config format, spec.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from .spec_base import Model
from .spec_devices import CPU_MODEL_PATTERN, CpuSet, Hugepages, Topology


class MemoryUnit(StrEnum):
    b = "b"
    bytes = "bytes"
    KB = "KB"
    k = "k"
    KiB = "KiB"
    MB = "MB"
    M = "M"
    MiB = "MiB"
    GB = "GB"
    G = "G"
    GiB = "GiB"
    TB = "TB"
    T = "T"
    TiB = "TiB"

    @property
    def bytes_per_unit(self) -> int:
        return _MEMORY_FACTORS[self.value]


_MEMORY_FACTORS = {
    "b": 1, "bytes": 1,
    "KB": 10**3, "k": 2**10, "KiB": 2**10,
    "MB": 10**6, "M": 2**20, "MiB": 2**20,
    "GB": 10**9, "G": 2**30, "GiB": 2**30,
    "TB": 10**12, "T": 2**40, "TiB": 2**40,
}
MIN_MEMORY_BYTES = 16 * 2**20
MAX_MEMORY_BYTES = (2**53 - 1) * 1024  # libvirt refuses more ("numerical overflow"), measured on 9.0


class Cpu(Model):
    amount: int = Field(1, ge=1, le=1024, description="Number of virtual CPUs.")
    max: int | None = Field(
        None, ge=1, le=1024, description="Most vCPUs the guest may have: cpu.amount can then rise to it while the "
        "guest runs (hot-plugged, no restart). Changing max itself takes a restart.")
    model: Annotated[str, Field(pattern=CPU_MODEL_PATTERN)] | None = Field(
        None, description="host-passthrough, host-model, or a named model (Skylake-Client, EPYC, ...: "
        "virsh cpu-models x86_64); default: libvirt's.")
    topology: Topology | None = Field(None, description="Sockets x cores x threads; their product is cpu.amount.")
    pin: dict[Annotated[str, Field(pattern=r"^\d{1,4}$")], CpuSet] = Field(
        default_factory=dict, description="vCPU number -> the host CPUs it may run on (a cpuset, \"2\" or \"2-3,6\").")
    emulator_pin: CpuSet | None = Field(None, description="The host CPUs QEMU's own threads may run on.")

    @property
    def most(self) -> int:
        return self.max if self.max is not None else self.amount

    @model_validator(mode="after")
    def _max_holds_amount(self) -> Self:
        if self.max is not None and self.max < self.amount:
            raise ValueError(f"@max: {self.max} is below cpu.amount {self.amount} (max is the most vCPUs)")
        return self


class Memory(Model):
    amount: int = Field(ge=1, description="Amount of memory, in `unit`.")
    unit: MemoryUnit = Field(strict=False, default=MemoryUnit.KiB, description="Unit of `amount` (libvirt's units).")
    max: int | None = Field(
        None, ge=1, description="Most memory the guest may have, in `unit`: `amount` is then the balloon's "
        "target, changed while the guest runs (it needs the guest's virtio balloon driver). Changing max "
        "itself takes a restart.")
    hugepages: Hugepages | None = Field(
        None, description="Back the guest's memory with the host's hugepages ({} for 2 MiB pages); the host "
        "must have them reserved (vm.nr_hugepages).")

    @property
    def bytes(self) -> int:
        return self.amount * self.unit.bytes_per_unit

    @property
    def most_bytes(self) -> int:
        return (self.max if self.max is not None else self.amount) * self.unit.bytes_per_unit

    @model_validator(mode="after")
    def _at_least_minimum(self) -> Self:
        if self.max is not None and self.max < self.amount:
            raise ValueError(f"@max: {self.max} {self.unit.value} is below memory.amount {self.amount} "
                             f"{self.unit.value} (max is the most memory)")
        if self.max is not None and self.max * self.unit.bytes_per_unit > MAX_MEMORY_BYTES:
            raise ValueError(f"@max: {self.max} {self.unit.value} is more than libvirt accepts "
                             f"({MAX_MEMORY_BYTES // 2**10} KiB, about 8 EiB)")
        if self.bytes < MIN_MEMORY_BYTES:
            raise ValueError(
                f"{self.amount} {self.unit.value} is less than the 16 MiB minimum "
                "(the default unit is KiB: did you forget \"unit\"?)"
            )
        if self.bytes > MAX_MEMORY_BYTES:
            raise ValueError(f"{self.amount} {self.unit.value} is more than libvirt accepts "
                             f"({MAX_MEMORY_BYTES // 2**10} KiB, about 8 EiB)")
        return self
