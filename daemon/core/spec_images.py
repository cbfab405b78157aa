"""Disks that are overlays on a base image, and the cloud-init seed of guests beyond NixOS.

PURE: imports only the standard library and pydantic (part of the config format, spec.py).

An overlay is the VM's data: its settings say how large it is and what happens when
its base changes, never that it may be deleted. A cloud image's guest learns who it
is from a NoCloud seed (`cloudInit`), written by nvirtd as a small ISO (volume
label `cidata`) and attached as a CD-ROM.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from .spec_base import Model

MAX_DISK_BYTES = 2**51  # qemu-img's qcow2 limit with its default 64 KiB clusters (2 PiB), measured
MAX_SEED_PART = 2**20  # user-data, meta-data and network-config: 1 MiB each (cloud-init reads far less)
# a file given by name: in the config directory, or an absolute path; never "..", never hidden
_SEED_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class SizeUnit(StrEnum):
    K = "K"
    M = "M"
    G = "G"
    T = "T"

    @property
    def bytes_per_unit(self) -> int:
        return 1024 ** ("KMGT".index(self.value) + 1)


class ImageChangePolicy(StrEnum):
    keep = "keep"
    recreate = "recreate"


class Overlay(Model):
    """A disk's qcow2 overlay on its base: `nix` for a nix disk, `image` for an image disk."""

    size: int | None = Field(
        None, ge=1, description="Virtual size of the overlay; default: the base image's size. Raising it grows "
        "the overlay in place (live while the guest runs); lowering it is refused."
    )
    unit: SizeUnit = Field(strict=False, default=SizeUnit.G, description="Unit of `size`.")
    on_image_change: ImageChangePolicy = Field(
        ImageChangePolicy.keep, strict=False,
        description="What to do when the base changes (a new nix build, another image path): keep the overlay "
        "on the old base and report image-outdated, or recreate it (old overlay kept aside).",
    )

    @property
    def size_bytes(self) -> int | None:
        return None if self.size is None else self.size * self.unit.bytes_per_unit

    @model_validator(mode="after")
    def _not_too_large(self) -> Self:
        if self.size_bytes is not None and self.size_bytes > MAX_DISK_BYTES:
            raise ValueError(f"@size: {self.size} {self.unit.value} is more than a qcow2 overlay can hold "
                             "(2048 T)")
        return self


SeedText = Annotated[str, Field(max_length=MAX_SEED_PART)]
SeedFile = Annotated[str, Field(min_length=1, max_length=4096)]
SEED_PARTS = (("user_data", "userData", "user-data"), ("meta_data", "metaData", "meta-data"),
              ("network_config", "networkConfig", "network-config"))


class CloudInit(Model):
    """A NoCloud seed: each part as text, or as a file (`...File`: a name in the config
    directory, or an absolute path), read when the config is."""

    user_data: SeedText | None = Field(None, description="user-data: a #cloud-config document, or a script.")
    user_data_file: SeedFile | None = Field(None, description="user-data from a file (name in the config "
                                            "directory, or an absolute path).")
    meta_data: SeedText | None = Field(None, description="meta-data; default: instance-id and local-hostname "
                                       "(the domain's name).")
    meta_data_file: SeedFile | None = Field(None, description="meta-data from a file.")
    network_config: SeedText | None = Field(None, description="network-config (version 1 or 2); default: none "
                                            "(cloud-init's DHCP on the first NIC).")
    network_config_file: SeedFile | None = Field(None, description="network-config from a file.")

    @model_validator(mode="after")
    def _one_source_each(self) -> Self:
        for attr, alias, _ in SEED_PARTS:
            if getattr(self, attr) is not None and getattr(self, attr + "_file") is not None:
                raise ValueError(f"@{alias}File: give {alias} or {alias}File, not both")
            name = getattr(self, attr + "_file")
            if name is None:
                continue
            if not name.startswith("/") and not _SEED_NAME.fullmatch(name):
                raise ValueError(f"@{alias}File: {name!r} is neither a file of the config directory (a name, "
                                 "without '/') nor an absolute path")
            if ".." in name.split("/") or re.search(r"/\.", name) or "\0" in name:
                raise ValueError(f"@{alias}File: {name!r}: no '..' and no hidden files")
        return self

    @property
    def files(self) -> dict[str, str]:
        """The parts given as files: alias -> the name as written."""
        return {alias: getattr(self, attr + "_file") for attr, alias, _ in SEED_PARTS
                if getattr(self, attr + "_file") is not None}

    def part(self, attr: str) -> str | None:
        return getattr(self, attr)
