"""Ownership metadata and the fingerprint that tells an edit from our own define."""

from __future__ import annotations

from daemon.core.ownership import Owner, fingerprint, owner_xml, parse_owner, parse_owner_element

LIBVIRT_XML = """<domain type='kvm'>
  <name>web</name>
  <uuid>36882c11-6234-5c5d-9175-1fe5ddeaecf9</uuid>
  <metadata>
    <nvirtd:owner xmlns:nvirtd="https://nvirtd.dev/xmlns/1" file="web.json" spec-hash="abc"{extra}/>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <vcpu placement='static'>{vcpu}</vcpu>
</domain>
"""


def xml(vcpu: int = 1, extra: str = "") -> str:
    return LIBVIRT_XML.format(vcpu=vcpu, extra=extra)


def test_fingerprint_ignores_the_metadata_block():
    assert fingerprint(xml()) == fingerprint(xml(extra=' fingerprint="f00"'))
    other_app = xml().replace("</metadata>", "  <app:x xmlns:app='urn:other'>&lt;/metadata&gt;</app:x>\n  </metadata>")
    assert fingerprint(other_app) == fingerprint(xml())


def test_fingerprint_ignores_namespace_declarations_libvirt_moves_onto_metadata():
    moved = xml().replace("<metadata>", '<metadata xmlns:nvirtd="https://nvirtd.dev/xmlns/1">')
    assert fingerprint(moved) == fingerprint(xml(extra=' fingerprint="f00"'))


def test_fingerprint_sees_an_edit():
    assert fingerprint(xml(vcpu=2)) != fingerprint(xml(vcpu=1))


def test_owner_round_trip():
    owner = parse_owner(xml(extra=' fingerprint="f00"'))
    assert owner == Owner(file="web.json", spec_hash="abc", fingerprint="f00")
    assert parse_owner_element(owner_xml(owner)) == owner
    # the namespace decides, not the prefix
    assert parse_owner(xml().replace("nvirtd:owner", "x:owner").replace("xmlns:nvirtd", "xmlns:x")) is not None
    assert parse_owner(xml().replace("https://nvirtd.dev/xmlns/1", "urn:another-tool")) is None
