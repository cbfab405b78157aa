"""The config format as users write it: what is accepted, and what each mistake says."""

from __future__ import annotations

import json

import pytest

from daemon.core.config import merge, parse_text
from daemon.core.spec import ConfigFile

GOOD = {"domains": {"web": {"cpu": {"amount": 2}, "memory": {"amount": 2, "unit": "GiB"}, "enableVnc": True,
                            "disks": {"root": {"type": "nix", "path": "/etc/nvirt.d/web.nix",
                                               "nix": {"size": 20, "unit": "G"}}}}}}


def test_seed_module_options_parse_with_their_names():
    parsed = parse_text("web.json", json.dumps(GOOD))
    assert parsed.ok, parsed.errors
    web = parsed.config.domains["web"]
    assert web.cpu.amount == 2 and web.memory.bytes == 2 * 2**30 and web.enable_vnc
    disk = web.disks["root"]
    assert disk.format.value == "qcow2" and disk.nix.size_bytes == 20 * 2**30
    assert disk.driver.name.value == "qemu" and disk.read_only is False


@pytest.mark.parametrize("nix,path,installable", [
    ({"flake": "/etc/nixos#web"}, None,
     "/etc/nixos#nixosConfigurations.web.config.system.build.images.qemu"),
    ({"attribute": "web"}, "/etc/nixos", "/etc/nixos#nixosConfigurations.web.config.system.build.images.qemu"),
    ({"flake": "github:me/hosts?ref=v2#packages.x86_64-linux.web-image"}, None,
     "github:me/hosts?ref=v2#packages.x86_64-linux.web-image"),  # a full attribute path is used as it is
])
def test_a_nix_disk_can_name_a_flake_output(nix, path, installable):
    disk = {"type": "nix", "nix": nix, **({"path": path} if path else {})}
    parsed = parse_text("web.json", json.dumps(_dom(disks={"root": disk})))
    assert parsed.ok, parsed.errors
    root = parsed.config.domains["web"].disks["root"]
    assert root.is_flake and root.build_source == installable


def test_a_configuration_file_is_built_as_itself():
    root = parse_text("web.json", json.dumps(GOOD)).config.domains["web"].disks["root"]
    assert not root.is_flake and root.build_source == "/etc/nvirt.d/web.nix"


@pytest.mark.parametrize("unit,factor", [("b", 1), ("bytes", 1), ("KB", 1000), ("k", 1024), ("KiB", 1024),
                                         ("MB", 10**6), ("M", 2**20), ("MiB", 2**20), ("GB", 10**9),
                                         ("G", 2**30), ("GiB", 2**30), ("TB", 10**12), ("T", 2**40),
                                         ("TiB", 2**40)])
def test_every_memory_unit_of_the_seed_module(unit, factor):
    amount = -(-32 * 2**20 // factor)  # at least 32 MiB in that unit
    parsed = parse_text("a.json", json.dumps({"domains": {"a": {"memory": {"amount": amount, "unit": unit}}}}))
    assert parsed.ok, parsed.errors
    assert parsed.config.domains["a"].memory.bytes == amount * factor


def _dom(**kw):
    return {"domains": {"web": {"memory": {"amount": 1, "unit": "GiB"}, **kw}}}


BAD = [
    pytest.param(_dom(cpu={"amount": 4, "max": 2}), "domains.web.cpu.max", "2 is below cpu.amount 4", id="cpu-max-below"),
    pytest.param(_dom(memory={"amount": 4, "max": 2, "unit": "GiB"}), "domains.web.memory.max",
                 "2 GiB is below memory.amount 4 GiB", id="memory-max-below"),
    pytest.param(_dom(cloudInit={"userData": "#cloud-config\n", "userDataFile": "u.yaml"}),
                 "domains.web.cloudInit.userDataFile", "give userData or userDataFile, not both", id="seed-twice"),
    pytest.param(_dom(cloudInit={"metaDataFile": "/etc/nvirt.d/../shadow"}), "domains.web.cloudInit.metaDataFile",
                 "no '..' and no hidden files", id="seed-file-dotdot"),
    pytest.param(_dom(cloudInit={"networkConfigFile": "sub/net.yaml"}), "domains.web.cloudInit.networkConfigFile",
                 "is neither a file of the config directory (a name, without '/') nor an absolute path",
                 id="seed-file-subdir"),
    pytest.param(_dom(disks={"r": {"type": "file", "path": "/x.img", "image": {"size": 2}}}), "domains.web.disks.r.image",
                 "'image' settings only apply to disks of type image", id="image-settings-elsewhere"),
    pytest.param(_dom(disks={"r": {"type": "image", "path": "/b.img", "driver": {"type": "raw"}}}),
                 "domains.web.disks.r.driver.type", "an image disk is a qcow2 overlay", id="image-disk-raw"),
    pytest.param(_dom(memory={"amount": 2, "unit": "GiG"}), "domains.web.memory.unit",
                 "'GiG' is not one of b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB", id="bad-memory-unit"),
    pytest.param(_dom(cpu={"amount": "two"}), "domains.web.cpu.amount", "expected an integer", id="cpu-not-int"),
    pytest.param(_dom(cpu={"amount": 0}), "domains.web.cpu.amount", "0 is less than 1, the smallest value allowed", id="cpu-zero"),
    pytest.param(_dom(enableVNC=True), "domains.web.enableVNC", "unknown option 'enableVNC' (did you mean 'enableVnc'?)",
                 id="unknown-key-suggests"),
    pytest.param({"domains": {"web": {"memory": {"amount": 2}}}}, "domains.web.memory",
                 "less than the 16 MiB minimum", id="memory-default-unit-trap"),
    pytest.param({"domains": {"-web": {"memory": {"amount": 1, "unit": "G"}}}}, "domains.-web",
                 "'-web' is not a valid name", id="bad-domain-name"),
    pytest.param({"domains": {"a" * 64: {"memory": {"amount": 1, "unit": "G"}}}}, "domains." + "a" * 64,
                 "at most 63 characters", id="name-too-long"),
    pytest.param(_dom(disks={"r": {"type": "iso", "path": "/x"}}), "domains.web.disks.r.type",
                 "'iso' is not one of nix, image, file, block, dir, volume", id="bad-disk-type"),
    pytest.param(_dom(disks={"r": {"type": "file", "path": "/x", "driver": {"name": "kvm"}}}),
                 "domains.web.disks.r.driver.name", "'kvm' is not one of qemu, tap, tap2, phy, file", id="bad-driver-name"),
    pytest.param(_dom(disks={"r": {"type": "file", "path": "/x", "driver": {"type": "vmdk"}}}),
                 "domains.web.disks.r.driver.type", "'vmdk' is not one of aio, raw, bochs, qcow2, qed, fat",
                 id="bad-driver-type"),
    pytest.param(_dom(disks={"r": {"type": "file", "path": "relative.img"}}), "domains.web.disks.r.path",
                 "'relative.img' is not an absolute path", id="relative-path"),
    pytest.param(_dom(disks={"r": {"type": "nix", "path": "/x.nix", "nix": {"size": 2, "unit": "P"}}}),
                 "domains.web.disks.r.nix.unit", "'P' is not one of K, M, G, T", id="bad-nix-unit"),
    pytest.param(_dom(disks={"r": {"type": "nix", "path": "/x.nix", "driver": {"type": "raw"}}}),
                 "domains.web.disks.r.driver.type", "driver.type must be qcow2", id="nix-not-qcow2"),
    pytest.param(_dom(disks={"a": {"type": "file", "path": "/a", "target": "vda"},
                             "b": {"type": "file", "path": "/b", "target": "vda"}}),
                 "domains.web.disks.b.target", "both use target 'vda'", id="duplicate-target"),
    pytest.param(_dom(state="paused"), "domains.web.state", "'paused' is not one of running, stopped", id="bad-state"),
    pytest.param(_dom(disks={"r": {"type": "file"}}), "domains.web.disks.r.path", "required option is missing",
                 id="missing-path"),
    pytest.param(_dom(disks={"r": {"type": "nix", "path": "/etc/nixos", "nix": {"flake": "/etc/nixos#web"}}}),
                 "domains.web.disks.r.path", "a disk built from nix.flake has no path", id="flake-and-path"),
    pytest.param(_dom(disks={"r": {"type": "nix", "nix": {"flake": "/etc/nixos"}}}),
                 "domains.web.disks.r.nix.flake", "is not FLAKEREF#NAME", id="flake-without-output"),
    pytest.param(_dom(disks={"r": {"type": "nix", "nix": {"flake": "--option x#web"}}}),
                 "domains.web.disks.r.nix.flake", "not starting with '-'", id="flake-like-an-option"),
    pytest.param(_dom(disks={"r": {"type": "nix", "nix": {"attribute": "web"}}}),
                 "domains.web.disks.r.path", "required option is missing (or give nix.flake)",
                 id="attribute-without-path"),
    pytest.param(_dom(disks={"r": {"type": "nix", "path": "/etc/nixos", "nix": {"attribute": "web", "flake": "/x#y"}}}),
                 "domains.web.disks.r.nix.attribute", "either flake", id="flake-and-attribute"),
    pytest.param(_dom(disks={"r": {"type": "file", "nix": {"flake": "/etc/nixos#web"}}}),
                 "domains.web.disks.r.path", "required option is missing", id="flake-on-a-file-disk"),
    pytest.param(_dom(hostdevs={"gpu": {"type": "pci", "address": "1:0.0"}}), "domains.web.hostdevs.gpu.address",
                 "'1:0.0' is not a PCI address like 0000:01:00.0", id="pci-address-format"),
    pytest.param(_dom(hostdevs={"key": {"type": "usb", "vendor": "0x1050"}}), "domains.web.hostdevs.key.vendor",
                 "needs both vendor and product", id="usb-vendor-without-product"),
    pytest.param(_dom(hostdevs={"key": {"type": "usb"}}), "domains.web.hostdevs.key.address",
                 "either as address BUS.DEVICE or as vendor and product", id="usb-without-a-way-to-find-it"),
    pytest.param(_dom(hostdevs={"key": {"type": "firewire", "address": "1.2"}}), "domains.web.hostdevs.key.type",
                 "'firewire' is not one of pci, usb", id="hostdev-type"),
    pytest.param(_dom(memory={"amount": 1, "unit": "GiB", "hugepages": {"size": 2, "unit": "GiB"}}),
                 "domains.web.memory.hugepages.size", "one page of 2 GiB is more than the guest's memory",
                 id="hugepages-larger-than-memory"),
    pytest.param(_dom(cpu={"amount": 2, "pin": {"2": "0"}}), "domains.web.cpu.pin.2", "there is no vCPU 2",
                 id="pin-beyond-the-vcpus"),
    pytest.param(_dom(cpu={"amount": 2, "pin": {"0": "0-x"}}), "domains.web.cpu.pin.0", "'0-x' is not a cpuset like 2, 0-3",
                 id="pin-not-a-cpuset"),
    pytest.param(_dom(cpu={"amount": 4, "topology": {"sockets": 1, "cores": 2}}), "domains.web.cpu.topology",
                 "is 2 CPUs, not cpu.amount 4", id="topology-not-amount"),
    pytest.param(_dom(cpu={"amount": 2}, numa=[{"cpus": "0", "memory": 512}, {"cpus": "0-1", "memory": 512}]),
                 "domains.web.numa.1.cpus", "vCPUs [0] are in another cell too", id="numa-cpu-twice"),
    pytest.param(_dom(cpu={"amount": 2}, numa=[{"cpus": "0-1", "memory": 512}]), "domains.web.numa",
                 "the cells hold 512 MiB, not the guest's 1024 MiB", id="numa-memory"),
    pytest.param(_dom(interfaces={"lan": {"network": "a", "bridge": "br0"}}), "domains.web.interfaces.lan",
                 "give exactly one of 'network' and 'bridge'", id="nic-two-targets"),
    pytest.param({"networks": {"lab": {"ip": {"address": "10.0.0.1", "prefix": 24},
                                       "dhcp": {"range": {"start": "10.1.0.2", "end": "10.1.0.9"}}}}},
                 "networks.lab.dhcp", "10.1.0.2 is outside the network 10.0.0.0/24", id="dhcp-outside-net"),
    pytest.param({"networks": {"lab": {"ip": {"address": "10.0.0.1", "prefix": 24},
                                       "dhcp": {"hosts": {"web": "10.0.0.10", "db": "10.0.0.10"}}}}},
                 "networks.lab.dhcp.hosts.web", "10.0.0.10 is given to 'db' too", id="dhcp-same-ip-twice"),
    pytest.param({"networks": {"lab": {"ip": {"address": "10.0.0.1", "prefix": 24},
                                       "dhcp": {"hosts": {"web": "10.0.0.1"}}}}},
                 "networks.lab.dhcp.hosts.web", "the host's own address", id="dhcp-host-is-gateway"),
    pytest.param([], "", "the top level must be an object", id="top-level-array"),
]


@pytest.mark.parametrize("data,path,reason", BAD)
def test_invalid_config_names_file_field_and_reason(data, path, reason):
    parsed = parse_text("web.json", json.dumps(data))
    assert not parsed.ok
    messages = [str(e) for e in parsed.errors]
    assert any(e.path == path and reason in e.reason for e in parsed.errors), messages
    assert all(m.startswith("web.json: ") for m in messages)


def test_invalid_json_gives_line_and_column():
    parsed = parse_text("web.json", '{\n  "domains": {\n    "web": {,}\n  }\n}')
    assert str(parsed.errors[0]).startswith("web.json: invalid JSON at line 3, column 13")


def test_empty_file_is_an_error_with_advice():
    parsed = parse_text("empty.json", "  \n")
    assert "the file is empty" in str(parsed.errors[0])


def test_same_name_in_two_files_is_a_conflict_naming_both():
    a = parse_text("a.json", json.dumps(_dom()))
    b = parse_text("b.json", json.dumps(_dom(cpu={"amount": 4})))
    state = merge({"a.json": a, "b.json": b}, {})
    assert ("domain", "web") in state.conflicts
    assert state.conflicts[("domain", "web")] == ("a.json", "b.json")
    assert "web" not in state.domains
    text = " ".join(str(e) for e in state.errors)
    assert "a.json" in text and "b.json" in text


def test_broken_file_keeps_its_last_good_content_and_others_go_on():
    good_a = parse_text("a.json", json.dumps(_dom()))
    b = parse_text("b.json", json.dumps({"domains": {"db": {"memory": {"amount": 1, "unit": "G"}}}}))
    broken_a = parse_text("a.json", '{"domains": ')
    state = merge({"a.json": broken_a, "b.json": b}, {"a.json": good_a.config})
    assert state.domains["web"].spec == good_a.config.domains["web"]
    assert "db" in state.domains
    assert state.broken_files == {"a.json"}
    assert state.held("domain", "web", "a.json") and not state.held("domain", "db", "b.json")


def test_broken_file_without_last_good_holds_domains_it_owned():
    state = merge({"a.json": parse_text("a.json", "nope")}, {})
    assert state.domains == {}
    assert state.held("domain", "whatever", "a.json")


def test_duplicate_mac_across_files_names_both():
    mac = "52:54:00:00:00:01"
    a = parse_text("a.json", json.dumps(_dom(interfaces={"lan": {"bridge": "br0", "mac": mac}})))
    b = parse_text("b.json", json.dumps({"domains": {"db": {"memory": {"amount": 1, "unit": "G"},
                                                            "interfaces": {"lan": {"bridge": "br0", "mac": mac}}}}}))
    errors = [str(e) for e in merge({"a.json": a, "b.json": b}, {}).errors]
    assert any("MAC 52:54:00:00:00:01 is also used by" in e and "a.json" in e and "b.json" in e for e in errors), errors


def test_json_schema_lists_the_seed_options():
    schema = ConfigFile.model_json_schema(by_alias=True)
    text = json.dumps(schema)
    for option in ("enableVnc", "readOnly", "onImageChange", "restartOnChange", "shutdownTimeout"):
        assert f'"{option}"' in text


def test_one_host_device_in_two_domains_holds_the_file_that_gave_it_twice():
    gpu = {"type": "pci", "address": "0000:01:00.0"}
    files = {"a.json": parse_text("a.json", json.dumps(_dom(hostdevs={"gpu": gpu}))),
             "b.json": parse_text("b.json", json.dumps({"domains": {"db": {
                 "memory": {"amount": 1, "unit": "GiB"}, "hostdevs": {"card": {"type": "pci", "address": "01:00.0"}}}}}))}
    state = merge(files, {})
    assert [str(e) for e in state.errors] == [
        "b.json: domains.db.hostdevs.card: PCI 0000:01:00.0 is also used by a.json: domains.web.hostdevs.gpu "
        "(this file keeps its last good state until one of them changes)"]
