"""Invariant 2, checked on the images directory after every step.

An overlay is the VM's data. Every overlay that ever reached its final name is
still on disk (at its name, or moved aside to a dated name), unchanged; an
overlay's name holds a new overlay only where the config the daemon read asked
for it (`nix.onImageChange: recreate`); no overlay ever gets smaller (a lowered
nix.size is refused); and no overlay's base image is gone from the nix store (its GC
root held while the overlay exists).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


class OverlayWatch:
    def __init__(self, images: Path, violate: Callable[[str], None]) -> None:
        self.images = images
        self.violate = violate
        self.seen: dict[int, str] = {}  # image id -> the overlay name it was created under
        self.at: dict[str, int] = {}  # overlay name -> the id it holds now
        self.size: dict[int, int] = {}  # image id -> the largest virtual size it had

    def check(self, texts: dict[str, str], previous: dict[str, str]) -> None:
        """`texts`: the config the daemon read last; `previous`: the one a pass in flight may act on."""
        found: dict[int, tuple[str, dict]] = {}
        for path in sorted(self.images.glob("*.qcow2*")) if self.images.is_dir() else []:
            if path.name.endswith(".creating"):
                continue  # never held data: a crash during create leaves it, the next create replaces it
            data = json.loads(path.read_text())
            found[data["id"]] = (path.name, data)
            if data["virtual-size"] < self.size.get(data["id"], 0):
                self.violate(f"invariant 2: overlay {path.name} shrank from {self.size[data['id']]} to "
                             f"{data['virtual-size']} bytes")
            self.size[data["id"]] = max(data["virtual-size"], self.size.get(data["id"], 0))
            if path.name.endswith(".qcow2"):
                held = self.at.get(path.name)
                asked = _recreate_asked(path.name, texts) or _recreate_asked(path.name, previous)
                if held is not None and held != data["id"] and not asked:
                    self.violate(f"invariant 2: overlay {path.name} was recreated without nix.onImageChange")
                self.at[path.name] = data["id"]
                self.seen.setdefault(data["id"], path.name)
        for image_id, name in self.seen.items():
            if image_id not in found:
                self.violate(f"invariant 2: overlay {name} (image {image_id}) was deleted")
        for name, data in found.values():
            if data["backing"] and not Path(data["backing"]).exists():
                self.violate(f"invariant 2: the base image {data['backing']} of overlay {name} was garbage-collected")


def declared_specs(domain: str, texts: dict[str, str]) -> list[dict]:
    """The domain's spec in each of the config texts that parse and declare it."""
    specs = []
    for text in texts.values():
        try:
            spec = json.loads(text).get("domains", {}).get(domain)
        except (ValueError, AttributeError):
            continue
        if spec:
            specs.append(spec)
    return specs


def recreates(spec: dict) -> bool:
    return any((d.get("nix") or d.get("image") or {}).get("onImageChange") == "recreate"
               for d in spec.get("disks", {}).values())


def _recreate_asked(overlay: str, texts: dict[str, str]) -> bool:
    return any(recreates(spec) for spec in declared_specs(overlay.rsplit("-", 1)[0], texts))
