"""Two small ElementTree helpers shared by the domain and network renderers.

PURE: standard library only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """Append <tag attrs>text</tag> to parent and return it."""
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def to_string(root: ET.Element) -> str:
    """Indented XML text, as written to golden files and sent to libvirt."""
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


@dataclass(frozen=True)
class RenderedXml:
    """A libvirt object as nvirtd wants it. The XML text is made on first use (only a
    define needs it), so a reload that re-renders many objects only pays for the hash."""

    name: str
    uuid: str
    spec_hash: str
    source_file: str
    tree: ET.Element = field(compare=False, repr=False)

    @cached_property
    def xml(self) -> str:
        return to_string(self.tree)
