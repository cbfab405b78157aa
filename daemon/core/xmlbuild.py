"""Two small ElementTree helpers shared by the domain and network renderers.

PURE: standard library only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


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
