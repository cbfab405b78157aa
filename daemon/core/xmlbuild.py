"""Two small ElementTree helpers shared by the domain and network renderers.

PURE: standard library only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """Append <tag attrs>text</tag> to parent and return it."""
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def to_string(root: ET.Element) -> str:
    """Indented XML text, as written to the golden files."""
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def serialize(root: ET.Element, namespaces: dict[str, str] | None = None) -> str:
    """ET.tostring(root, encoding="unicode"), byte for byte, for the trees nvirtd builds
    (no comments or processing instructions: those go to ElementTree), in a third of its
    time: ElementTree first walks the whole tree for namespaces. `namespaces` (URI ->
    prefix) are the ones the tree's tags use, declared on the root as ElementTree does.
    Spec hashes are computed from this text, so its sameness is tested
    (tests/core/test_golden_xml.py)."""
    out: list[str] = []
    _write(root, out, namespaces or {}, root=True)
    return "".join(out)


def _write(el: ET.Element, out: list[str], namespaces: dict[str, str], root: bool = False) -> None:
    tag = el.tag
    if not isinstance(tag, str):
        out.append(ET.tostring(el, encoding="unicode"))  # what this writer does not cover (tail included)
        return
    if tag[:1] == "{":
        uri, _, local = tag[1:].partition("}")
        if uri not in namespaces:
            out.append(ET.tostring(el, encoding="unicode"))
            return
        tag = f"{namespaces[uri]}:{local}"
    start = "<" + tag
    if root:
        start += "".join([f' xmlns:{prefix}="{_attr(uri)}"'
                          for uri, prefix in sorted(namespaces.items(), key=lambda item: item[1])])
    attrs = el.items()
    if attrs:  # one string per element, not one per attribute: this runs 25,000 times for 1,000 domains
        start += "".join([f' {key}="{_attr(value)}"' for key, value in attrs])
    text = el.text
    if text or len(el):
        out.append((start + ">" + _cdata(text)) if text else (start + ">"))
        for child in el:
            _write(child, out, namespaces)
        out.append(f"</{tag}>")
    else:
        out.append(start + " />")
    if el.tail:
        out.append(_cdata(el.tail))


_cdata = ET._escape_cdata  # type: ignore[attr-defined]  # ElementTree's own escaping, so the text is the same
_attr = ET._escape_attrib  # type: ignore[attr-defined]


def splice_after_uuid(text: str, insert: str) -> str:
    """`insert` right after the top-level </uuid> of a rendered object (where libvirt keeps <metadata>)."""
    at = text.index("</uuid>") + len("</uuid>")
    return text[:at] + insert + text[at:]


@dataclass(frozen=True)
class RenderedXml:
    """A libvirt object as nvirtd wants it: `xml` is the text sent to libvirt (the text
    the spec hash was computed from, with the owner element spliced in); `pretty`, the
    same indented, is what the golden files hold. The tree it was built from is not
    kept: 1,000 of them cost 6 MiB for nothing once the text exists."""

    name: str
    uuid: str
    spec_hash: str
    source_file: str
    xml: str = field(compare=False, repr=False, default="", kw_only=True)
    owner: Any = field(compare=False, repr=False, default=None, kw_only=True)  # the Owner attached to it

    @property
    def tree(self) -> ET.Element:
        return ET.fromstring(self.xml)

    @property
    def pretty(self) -> str:
        return to_string(self.tree)
