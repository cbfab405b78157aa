"""Guests beyond NixOS, on libvirt's test driver with the real qemu-img: a cloud-init seed
written (and read back as the guest would find it), rewritten when its content changes,
its parts from files next to the config; and image disks, overlays on a base outside the
nix store that stays as it is. The real guest reading the seed is
tests/integration/test_cloud_images.py."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pycdlib

from tests.conftest import domain, write_json
from tests.engine.test_reconcile import state, wait_for

USER_DATA = "#cloud-config\nhostname: web\n"


def seed_of(conn, name: str) -> str:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return next(d.find("source").get("file") for d in root.findall("./devices/disk[@device='cdrom']")
                if d.find("source").get("file", "").endswith(".iso"))


def iso_files(path: str) -> dict[str, str]:
    """The seed as cloud-init finds it: the volume label and each file by its Joliet name."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        files = {"label": iso.pvd.volume_identifier.decode().strip()}
        for child in iso.list_children(joliet_path="/"):
            name = child.file_identifier().decode("utf-16_be")
            if name in (".", "..") or child.is_dir():
                continue
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()


async def test_the_seed_is_written_read_back_and_rewritten_when_it_changes(dirs, settings, start_daemon,
                                                                           fresh_libvirt):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(cloudInit={"userData": USER_DATA})}})
    d = await start_daemon(settings)
    first = seed_of(fresh_libvirt, "web")
    assert Path(first).parent == dirs["images"] and os.stat(first).st_mode & 0o777 == 0o600
    files = iso_files(first)
    assert files["label"] == "cidata" and files["user-data"] == USER_DATA
    assert files["meta-data"].startswith("instance-id: ") and "local-hostname: web" in files["meta-data"]
    assert "network-config" not in files
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING

    changed = "#cloud-config\nhostname: web2\n"
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(cloudInit={"userData": changed})}})
    await d.reload()
    second = seed_of(fresh_libvirt, "web")
    assert second != first and iso_files(second)["user-data"] == changed
    entry = d.entry("web")
    assert "restart-required" in entry.conditions  # the running guest booted with the first seed
    assert os.path.exists(first)  # ... which it may still have open: kept
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain(state="stopped", cloudInit={"userData": changed})}})
    await d.reload()
    await wait_for(lambda: not os.path.exists(first), 5, "the stale seed removed")
    assert os.path.exists(second)
    before = d.hv.mutation_count
    await d.reload(explicit=True)
    assert d.hv.mutation_count == before  # an unchanged seed writes nothing, defines nothing


async def test_seed_parts_from_files_and_a_missing_one_changes_nothing(dirs, settings, start_daemon, fresh_libvirt):
    part = dirs["config"] / "web.user-data"
    part.write_text(USER_DATA)
    part.chmod(0o600)
    spec = {"domains": {"web": domain(cloudInit={"userDataFile": "web.user-data",
                                                 "networkConfig": "version: 2\n"})}}
    write_json(dirs["config"] / "a.json", spec)
    d = await start_daemon(settings)
    first = seed_of(fresh_libvirt, "web")
    assert iso_files(first)["user-data"] == USER_DATA and iso_files(first)["network-config"] == "version: 2\n"

    part.write_text("#cloud-config\nhostname: from-the-file\n")  # the JSON is untouched
    await d.reload()
    assert iso_files(seed_of(fresh_libvirt, "web"))["user-data"].endswith("from-the-file\n")

    part.unlink()
    defined = seed_of(fresh_libvirt, "web")
    await d.reload()
    assert d.daemon.status.config_errors == [
        f"a.json: domains.web.cloudInit.userDataFile: {part} does not exist"]
    assert seed_of(fresh_libvirt, "web") == defined  # the last good state, kept
    assert state(fresh_libvirt, "web") == libvirt.VIR_DOMAIN_RUNNING


def qcow2_base(path: Path, text: str) -> str:
    raw = path.with_suffix(".raw")
    raw.write_bytes(text.encode().ljust(1 << 20, b"\0"))
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_image_disks_are_overlays_on_a_base_that_stays_as_it_is(dirs, settings, start_daemon, fresh_libvirt,
                                                                      tmp_path):
    base = tmp_path / "bases" / "debian.qcow2"
    base.parent.mkdir()
    digest = qcow2_base(base, "BASE\n")
    disk = {"root": {"type": "image", "path": str(base), "image": {"size": 64, "unit": "M"}}}
    write_json(dirs["config"] / "a.json", {"domains": {"a": domain(disks=disk), "b": domain(disks=disk)}})
    d = await start_daemon(settings)
    for name in ("a", "b"):
        overlay = dirs["images"] / f"{name}-root.qcow2"
        info = subprocess.run(["qemu-img", "info", "--output=json", str(overlay)], capture_output=True, text=True,
                              check=True).stdout
        assert f'"backing-filename": "{base}"' in info and '"virtual-size": 67108864' in info
        assert state(fresh_libvirt, name) == libvirt.VIR_DOMAIN_RUNNING
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest
    assert not (settings.state_dir and list(Path(settings.state_dir).glob("gcroots/*")))  # no GC root: not nix's
    assert d.entry("a").phase == "running"


async def test_a_base_in_the_images_directory_or_missing_is_refused(dirs, settings, start_daemon, fresh_libvirt):
    inside = dirs["images"] / "other-root.qcow2"
    qcow2_base(inside, "OTHER VM\n")
    write_json(dirs["config"] / "a.json", {"domains": {
        "a": domain(disks={"root": {"type": "image", "path": str(inside)}}),
        "b": domain(disks={"root": {"type": "image", "path": str(dirs["images"].parent / "nowhere.qcow2")}}),
    }})
    d = await start_daemon(settings)
    assert d.entry("a").phase == "error" and "is in nvirtd's images directory" in d.entry("a").error
    assert d.entry("b").phase == "error" and "nowhere.qcow2 does not exist" in d.entry("b").error
    assert {x.name() for x in fresh_libvirt.listAllDomains()} & {"a", "b"} == set()
    assert not (dirs["images"] / "a-root.qcow2").exists()
