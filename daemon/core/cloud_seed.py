"""The NoCloud seed of a domain: its files, and the name that says which content it holds.

PURE: standard library only.

The seed's path carries the digest of its content (`web-cidata-0123456789ab.iso` in
the images directory), so the rendered XML changes exactly when the content does: a
changed seed is a changed definition (redefined; restart-required while it runs), and
a seed file, once written, never changes. Seeds of other content are stale: removed
once no running instance can have them open.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from .spec_images import SEED_PARTS, CloudInit

VOLUME_LABEL = "cidata"  # what cloud-init's NoCloud looks for
DEFAULT_USER_DATA = "#cloud-config\n{}\n"


@dataclass(frozen=True, slots=True)
class Seed:
    path: str
    files: tuple[tuple[str, str], ...]  # (file name on the ISO, text), in order


def seed_files(name: str, uuid: str, seed: CloudInit) -> tuple[tuple[str, str], ...]:
    """user-data, meta-data and (when given) network-config, as cloud-init reads them."""
    files = []
    for attr, _, filename in SEED_PARTS:
        text = seed.part(attr)
        if text is None and filename == "user-data":
            text = DEFAULT_USER_DATA
        if text is None and filename == "meta-data":
            # instance-id stays the same across changes: cloud-init runs its once-per-instance
            # modules once (give meta-data with a new instance-id to run them again)
            text = f"instance-id: {uuid}\nlocal-hostname: {name}\n"
        if text is not None:
            files.append((filename, text))
    return tuple(files)


def render_seed(images_dir: str, name: str, uuid: str, seed: CloudInit) -> Seed:
    files = seed_files(name, uuid, seed)
    h = hashlib.sha256()
    for filename, text in files:
        h.update(filename.encode() + b"\0" + text.encode() + b"\0")
    return Seed(str(PurePosixPath(images_dir) / f"{name}-{VOLUME_LABEL}-{h.hexdigest()[:12]}.iso"), files)


def is_seed_of(filename: str, name: str) -> bool:
    """Whether `filename` is one of the seeds nvirtd writes for domain `name` (and no other's)."""
    return re.fullmatch(re.escape(name) + r"-cidata-[0-9a-f]{12}\.iso", filename) is not None
