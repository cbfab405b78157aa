"""Golden XML: tests/data/<case>/config.json renders to tests/data/<case>/<kind>-<name>.xml.

Set NVIRTD_REGENERATE=1 to rewrite the expected files after an intended change
(then read the diff). Every expected file is also validated by libvirt's own
Relax-NG schema with virt-xml-validate.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon.core.config import merge, parse_text
from daemon.core.desired import render_all
from daemon.core.domain_xml import RenderContext
from daemon.core.spec import VirtType
from tests.conftest import virt_xml_validate

DATA = Path(__file__).resolve().parent.parent / "data"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "config.json").exists())
CTX = RenderContext(virt_type=VirtType.kvm, images_dir="/var/lib/libvirt/images", state_dir="/var/lib/nvirtd")
REGENERATE = os.environ.get("NVIRTD_REGENERATE") == "1"


def rendered_files(case: str) -> dict[str, str]:
    parsed = parse_text("config.json", (DATA / case / "config.json").read_text())
    assert parsed.ok, parsed.errors
    rendered = render_all(merge({"config.json": parsed}, {}), CTX)
    assert not rendered.all_errors, rendered.all_errors
    out = {f"domain-{n}.xml": r.pretty for n, r in rendered.domains.items()}
    out |= {f"network-{n}.xml": r.pretty for n, r in rendered.networks.items()}
    return out


@pytest.mark.parametrize("case", CASES)
def test_rendered_xml_matches_golden_file(case):
    for filename, xml in rendered_files(case).items():
        expected = DATA / case / filename
        if REGENERATE:
            expected.write_text(xml)
        assert expected.exists(), f"{expected} missing: run with NVIRTD_REGENERATE=1"
        assert xml == expected.read_text(), f"{case}/{filename} differs from the golden file"


@pytest.mark.parametrize("case", CASES)
def test_golden_files_are_valid_libvirt_xml(case):
    files = sorted((DATA / case).glob("*-*.xml"))
    assert files, f"no golden files in {case}"
    for path in files:
        kind = path.name.split("-", 1)[0]
        result = virt_xml_validate(path, kind)
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


def test_rendering_is_deterministic_and_hash_ignores_file_name():
    a = rendered_files("seed-module")
    assert a == rendered_files("seed-module")
    parsed = parse_text("other.json", (DATA / "seed-module" / "config.json").read_text())
    other = render_all(merge({"other.json": parsed}, {}), CTX).domains["web"]
    first = render_all(merge({"config.json": parse_text("config.json", (DATA / "seed-module" / "config.json").read_text())}, {}), CTX).domains["web"]
    assert other.spec_hash == first.spec_hash and other.uuid == first.uuid


def test_spec_change_changes_hash_but_not_identity():
    base = json.loads((DATA / "networks" / "config.json").read_text())
    before = render_all(merge({"c.json": parse_text("c.json", json.dumps(base))}, {}), CTX)
    base["domains"]["web"]["memory"]["amount"] = 512
    after = render_all(merge({"c.json": parse_text("c.json", json.dumps(base))}, {}), CTX)
    assert before.domains["web"].spec_hash != after.domains["web"].spec_hash
    assert before.domains["web"].uuid == after.domains["web"].uuid
    assert "52:54:00" in after.domains["web"].xml
    mac = lambda r: r.xml.split("mac address=\"")[1][:17]  # noqa: E731
    assert mac(before.domains["web"]) == mac(after.domains["web"])
    assert before.domains["db"] == after.domains["db"]


def test_the_fast_serializer_writes_what_elementtree_writes():
    """Spec hashes are computed from xmlbuild.serialize(): a byte of difference from
    ElementTree would redefine every domain after an upgrade."""
    import xml.etree.ElementTree as ET

    from daemon.core.xmlbuild import serialize
    root = ET.Element("domain", type="kvm")
    ET.SubElement(root, "name").text = 'a&b <c> "d" \'e\' é\u2603'
    ET.SubElement(root, "empty")
    odd = ET.SubElement(root, "x", attr='q"uote &amp; <lt> \n\t\r end', other="")
    odd.text, odd.tail = "\n  text\r\n", "tail & more"
    ET.SubElement(odd, "y", z="1").text = ""
    assert serialize(root) == ET.tostring(root, encoding="unicode")
    # the owner element spliced into every definition, a namespaced tag with every attribute set
    from daemon.core.ownership import NAMESPACE, PREFIX, Owner, owner_element
    meta = ET.Element("metadata")
    meta.append(owner_element(Owner(file='a "b".json', spec_hash="s", fingerprint="f", restart_hash="r",
                                    instance="i", shutdown_timeout=5, shutdown_started=1.5, live="l&m",
                                    arrival="ready", arriving_from="h1", host="h2", leaving_for="h3",
                                    move_error="<e>", cold=True)))
    assert serialize(meta, {NAMESPACE: PREFIX}) == ET.tostring(meta, encoding="unicode")
    import copy
    for case in CASES:
        rendered = render_all(merge({"c.json": parse_text("c.json", (DATA / case / "config.json").read_text())}, {}),
                              CTX)
        for r in [*rendered.domains.values(), *rendered.networks.values()]:
            bare = copy.deepcopy(r.tree)
            bare.remove(bare.find("metadata"))  # the hash is of the tree before the owner is attached
            assert serialize(bare) == ET.tostring(bare, encoding="unicode")
            assert ET.fromstring(r.xml).find("metadata") is not None, "libvirt gets the owner element"
