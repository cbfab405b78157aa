"""Ownership metadata and the two hashes that make change detection exact.

PURE: standard library only.

Every domain and network nvirtd defines carries one element in its <metadata>,
in nvirtd's own XML namespace:

    <nvirtd:owner xmlns:nvirtd="https://nvirtd.dev/xmlns/1" instance="default"
                  file="web.json" spec-hash="..." fingerprint="..."/>

- `instance` names the nvirtd instance that owns it (one per config directory, see
  `nvirtd run --instance`). An instance changes and removes only its own objects;
  another instance's are as foreign to it as any other. An element without it was
  written before instances existed and belongs to the default instance, the service
  on /etc/nvirt.d: upgrading changes nothing.
- `shutdown-timeout` is the spec's shutdownTimeout when it is not the default, so a
  domain removed while nvirtd was down still gets the time its guest needs. In the
  running domain's live metadata only, `shutdown-started` records when nvirtd began a
  graceful shutdown (Unix time), so a restart of nvirtd does not start the clock again.
- `spec-hash` is the hash of the XML nvirtd rendered (without metadata). A new
  desired spec that renders the same XML has the same hash: no redefine.
  libvirt's expanded XML is never compared with ours (it adds defaults).
- `fingerprint` is the hash of the inactive XML libvirt produced from it, read
  back right after the define (again without metadata). If the definition libvirt
  holds later hashes differently, someone edited it (virsh edit, virt-manager).
- `restart-hash` is the hash of the rendered XML without what can change while it runs.
  For a network: its static DHCP and DNS hosts (a running network is updated in place,
  virNetworkUpdate). For a domain: vCPUs within cpu.max, memory within memory.max, NICs
  and virtio data disks; `live` lists those parts (core/live_changes.py), and in the
  running instance's metadata says what the guest has now.
- `arrival` and `arriving-from`: a fleet's domain whose host changed, defined (never
  started) on its new host before the live migration: "preparing" while its disks are made
  there, "ready" once the old host may migrate it (core/fleet_moves.py). The migration
  brings the old host's definition, which has neither.
- `leaving-for`, in the running instance's metadata only: its host is drained (`nvirtd drain`)
  and it goes to this one, which prepares its arrival on seeing it. `move-error`: why its last
  live migration failed, for the host it was to go to to show. `cold`: a stopped VM started
  paused only to move it: its guest never ran, and its new host powers it off.
- `host`: the host whose libvirt wrote the definition the fingerprint is of. A definition a
  migration brought is another libvirt's: its new host records its own fingerprint of it.
An object without the element is not nvirtd's and is never touched.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from .xmlbuild import serialize, splice_after_uuid

NAMESPACE = "https://nvirtd.dev/xmlns/1"
PREFIX = "nvirtd"
OWNER_TAG = f"{{{NAMESPACE}}}owner"
ET.register_namespace(PREFIX, NAMESPACE)


DEFAULT_INSTANCE = "default"  # the service on /etc/nvirt.d, and every element without an instance
DEFAULT_SHUTDOWN_TIMEOUT = 120


@dataclass(frozen=True, slots=True)
class Owner:
    file: str
    spec_hash: str
    fingerprint: str | None = None
    restart_hash: str | None = None
    instance: str | None = None  # None: written before instances existed (the default instance's)
    shutdown_timeout: int | None = None  # None: the default
    shutdown_started: float | None = None  # live metadata only
    live: str | None = None  # a domain's live parts (core/live_changes.LiveParts, encoded)
    arrival: str | None = None  # a fleet's arriving domain: "preparing" | "ready" (core/fleet_moves.py)
    arriving_from: str | None = None  # the host it moves from
    host: str | None = None  # the host whose libvirt the fingerprint is of (a fleet's moves)
    leaving_for: str | None = None  # live metadata only: its host is drained, it goes to this one
    move_error: str | None = None  # live metadata only: why its last live migration failed
    cold: bool = False  # live metadata only: a stopped VM started paused to move it (it never ran)

    @property
    def owned_by(self) -> str:
        return self.instance or DEFAULT_INSTANCE

    @property
    def timeout(self) -> int:
        return DEFAULT_SHUTDOWN_TIMEOUT if self.shutdown_timeout is None else self.shutdown_timeout


def owner_element(owner: Owner) -> ET.Element:
    el = ET.Element(OWNER_TAG)
    if owner.instance:
        el.set("instance", owner.instance)
    el.set("file", owner.file)
    el.set("spec-hash", owner.spec_hash)
    if owner.fingerprint:
        el.set("fingerprint", owner.fingerprint)
    if owner.restart_hash:
        el.set("restart-hash", owner.restart_hash)
    if owner.shutdown_timeout is not None and owner.shutdown_timeout != DEFAULT_SHUTDOWN_TIMEOUT:
        el.set("shutdown-timeout", str(owner.shutdown_timeout))
    if owner.shutdown_started is not None:
        el.set("shutdown-started", f"{owner.shutdown_started:.3f}")
    if owner.live is not None:
        el.set("live", owner.live)
    if owner.host:
        el.set("host", owner.host)
    if owner.leaving_for:
        el.set("leaving-for", owner.leaving_for)
    if owner.move_error:
        el.set("move-error", owner.move_error)
    if owner.cold:
        el.set("cold", "1")
    if owner.arrival is not None:
        el.set("arrival", owner.arrival)
        el.set("arriving-from", owner.arriving_from or "")
    return el


def owner_xml(owner: Owner) -> str:
    """The element alone, as libvirt's setMetadata() wants it (no namespace prefix)."""
    el = ET.Element("owner")
    for key, value in owner_element(owner).attrib.items():
        el.set(key, value)
    return serialize(el)


def parse_owner(xml: str | ET.Element) -> Owner | None:
    """Find our element in a domain's or network's XML; None when it is not ours."""
    root = ET.fromstring(xml) if isinstance(xml, str) else xml
    meta = root.find("metadata")
    el = meta.find(OWNER_TAG) if meta is not None else None
    return None if el is None else _owner_of(el)


def _owner_of(el: ET.Element) -> Owner:
    return Owner(file=el.get("file", ""), spec_hash=el.get("spec-hash", ""), fingerprint=el.get("fingerprint"),
                 restart_hash=el.get("restart-hash"), instance=el.get("instance") or None,
                 shutdown_timeout=_number(el.get("shutdown-timeout"), int),
                 shutdown_started=_number(el.get("shutdown-started"), float), live=el.get("live"),
                 arrival=el.get("arrival"), arriving_from=el.get("arriving-from"), host=el.get("host") or None,
                 leaving_for=el.get("leaving-for") or None, move_error=el.get("move-error") or None,
                 cold=el.get("cold") == "1")


def _number(text: str | None, kind: type) -> Any:
    """An attribute someone may have edited by hand: unreadable is the same as absent."""
    try:
        return None if text is None else kind(text)
    except ValueError:
        return None


def parse_owner_element(xml: str | None) -> Owner | None:
    """Parse the bare element libvirt's metadata() call returns."""
    if not xml:
        return None
    return _owner_of(ET.fromstring(xml))


def _digest(root: ET.Element) -> str:
    return digest_of(serialize(root))


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def spec_hash(root: ET.Element) -> str:
    """Hash of the XML nvirtd renders, before the metadata is added."""
    if root.find("metadata") is not None:
        raise ValueError("spec_hash() wants the XML without <metadata>")
    return _digest(root)


_METADATA_OPEN = re.compile(r"<metadata[\s>]")  # libvirt may put namespace declarations on it


def fingerprint(libvirt_xml: str) -> str:
    """Hash of a definition as libvirt holds it, without its <metadata> block.

    libvirt formats its XML itself (same indentation and attribute order every time),
    so its text is already canonical: only the metadata block is cut out, which keeps
    this cheap enough to run on every observation of 1,000 domains.
    """
    match = _METADATA_OPEN.search(libvirt_xml)
    end = libvirt_xml.find("</metadata>", match.start()) if match else -1
    if match and end != -1:
        libvirt_xml = libvirt_xml[:match.start()] + libvirt_xml[end + len("</metadata>"):]
    return hashlib.sha256(libvirt_xml.encode()).hexdigest()[:32]


def owned_text(text: str, owner: Owner) -> str:
    """The rendered text with <metadata><nvirtd:owner/></metadata> right after <uuid> (libvirt's order)."""
    meta = ET.Element("metadata")
    meta.append(owner_element(owner))
    return splice_after_uuid(text, serialize(meta, {NAMESPACE: PREFIX}))
