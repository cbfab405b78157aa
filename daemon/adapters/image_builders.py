"""Which command builds a nix disk's image. Part of the images adapter (images.py).

- A flake (`nix.flake`, or `path` + `nix.attribute`): `nix build` of the installable,
  with the nix-command and flakes features enabled for that call only
  (`--extra-experimental-features`: a nix that has them on already is unaffected).
- A configuration file, by default what a current NixOS host has: nixpkgs' own image
  builder, `system.build.images.qemu` (NixOS 25.05 and later; what
  `nixos-rebuild build-image --image-variant qemu` builds), through
  `nix-build '<nixpkgs/nixos>'` with the file as `nixos-config`. Where the nixpkgs on
  NIX_PATH is older (it has no nixos/modules/image/images.nix), `nixos-generate -f
  qcow` if it is installed. Both are detected, not assumed, once per daemon; neither
  there is a clear error that names both and `--build-command`.
- `--build-command` replaces the builder of configuration files (`{path}` is the file).
"""

from __future__ import annotations

import os
import shutil

import structlog

from ..core.spec import IMAGE_ATTRIBUTE
from ..errors import CommandError, PermanentError
from . import proc

log = structlog.get_logger("nvirtd.images")
FLAKES = ("--extra-experimental-features", "nix-command flakes")
IMAGES_MODULE = "nixpkgs/nixos/modules/image/images.nix"  # nixpkgs' image builder is there since 25.05


def flake_argv(installable: str) -> list[str]:
    # --json: the result on stdout (--print-out-paths is nix >= 2.9; Debian 12 has 2.8);
    # -L: the builders' own lines on stderr, which the progress shows
    return ["nix", *FLAKES, "build", "--no-link", "--json", "-L", installable]


def nixpkgs_argv(config: str) -> list[str]:
    return ["nix-build", "<nixpkgs/nixos>", "-A", IMAGE_ATTRIBUTE, "-I", f"nixos-config={config}", "--no-out-link"]


def generate_argv(config: str) -> list[str]:
    return ["nixos-generate", "-f", "qcow", "-c", config]


class Builders:
    def __init__(self, custom: tuple[str, ...] | None = None, env: dict[str, str] | None = None) -> None:
        self.custom = tuple(custom) if custom else None
        self.env = env
        self._default: str | None = None  # "nixpkgs" or "nixos-generate", once found

    async def argv(self, source: str, *, flake: bool) -> list[str]:
        if flake:
            return flake_argv(source)
        if self.custom is not None:
            return [part.replace("{path}", source) for part in self.custom]
        if await self.default() == "nixpkgs":
            return nixpkgs_argv(source)
        return generate_argv(source)

    async def default(self) -> str:
        """The builder of configuration files this host has (found once, then kept)."""
        if self._default is None:
            self._default = await self._detect()
            log.info("image_builder_found", builder=self.describe())
        return self._default

    async def _detect(self) -> str:
        try:
            await proc.run(["nix-instantiate", "--find-file", IMAGES_MODULE], env=self.env)
            return "nixpkgs"
        except (CommandError, PermanentError):
            pass
        path = (self.env or {}).get("PATH", os.environ.get("PATH", ""))
        if shutil.which("nixos-generate", path=path):
            return "nixos-generate"
        raise PermanentError(
            f"no image builder: the nixpkgs on NIX_PATH has no {IMAGES_MODULE.split('/', 1)[1]} (nixpkgs' "
            "image builder, NixOS 25.05 or later) and nixos-generate is not installed; set NIX_PATH to a "
            "current nixpkgs, or give --build-command")

    def describe(self) -> str:
        """For the log: which builder builds configuration files."""
        if self.custom is not None:
            return "--build-command " + " ".join(self.custom)
        return {"nixpkgs": f"nix-build '<nixpkgs/nixos>' -A {IMAGE_ATTRIBUTE}",
                "nixos-generate": "nixos-generate -f qcow"}.get(self._default or "", "not chosen yet")
