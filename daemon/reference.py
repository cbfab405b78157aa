"""The configuration reference (docs/configuration.md), generated from the models.

`nvirtd reference > docs/configuration.md` rewrites it; a test fails when the file
and the models disagree, and when an option has no entry in LIBVIRT (what it becomes).
"""

from __future__ import annotations

import json
from typing import Any

from .core.spec import ConfigFile

# option path (as in the JSON, <name> for user-chosen keys) -> the libvirt XML it becomes
LIBVIRT: dict[str, str] = {
    "domains.<name>": "`<domain>`, `<name>`; ownership in `<metadata><nvirtd:owner/>`",
    "domains.<name>.uuid": "`<uuid>`",
    "domains.<name>.cpu": "",
    "domains.<name>.cpu.amount": "`<vcpu>` (with cpu.max: `<vcpu current>`)",
    "domains.<name>.cpu.max": "`<vcpu current='AMOUNT'>MAX</vcpu>`; live: `virDomainSetVcpusFlags`",
    "domains.<name>.memory": "",
    "domains.<name>.memory.amount": "`<memory>` (with memory.max: `<currentMemory>`)",
    "domains.<name>.memory.max": "`<memory>` MAX, `<currentMemory>` AMOUNT; live: `virDomainSetMemoryFlags`",
    "domains.<name>.memory.unit": "`<memory unit=>`",
    "domains.<name>.enableVnc": "`<graphics type='vnc' autoport='yes' listen='127.0.0.1'>`",
    "domains.<name>.state": "autostart (`virsh autostart`), start / ACPI shutdown",
    "domains.<name>.restartOnChange": "(nvirtd policy)",
    "domains.<name>.shutdownTimeout": "(nvirtd policy: ACPI shutdown, then destroy)",
    "domains.<name>.virtType": "`<domain type=>`",
    "domains.<name>.firmware": "`<os firmware='efi'>` (NVRAM kept on undefine)",
    "domains.<name>.tpm": "`<tpm model='tpm-crb'><backend type='emulator' version='2.0'>`",
    "domains.<name>.consoleLog": "`<serial><log file='STATE/console/NAME.log'>`",
    "domains.<name>.boot": "",
    "domains.<name>.boot.kernel": "`<os><kernel>`",
    "domains.<name>.boot.initrd": "`<os><initrd>`",
    "domains.<name>.boot.cmdline": "`<os><cmdline>`",
    "domains.<name>.disks": "",
    "domains.<name>.disks.<name>": "`<disk>`",
    "domains.<name>.disks.<name>.type": "`<disk type=>` (nix: a file overlay)",
    "domains.<name>.disks.<name>.device": "`<disk device=>`",
    "domains.<name>.disks.<name>.driver": "",
    "domains.<name>.disks.<name>.driver.name": "`<driver name=>`",
    "domains.<name>.disks.<name>.driver.type": "`<driver type=>`",
    "domains.<name>.disks.<name>.path": "`<source file=/dev=/dir=/pool= volume=>`",
    "domains.<name>.disks.<name>.target": "`<target dev= bus=>` (bus from the prefix: vd virtio, sd sata, hd ide)",
    "domains.<name>.disks.<name>.readOnly": "`<readonly/>`",
    "domains.<name>.disks.<name>.bootOrder": "`<boot order=>`",
    "domains.<name>.startAfter": "(nvirtd policy: the order of starts and of removals)",
    "domains.<name>.host": "(nvirtd policy: which fleet host's daemon manages it); changed while it runs: "
                           "`virDomainMigrateToURI3` (LIVE, PEER2PEER, PERSIST_DEST, UNDEFINE_SOURCE, NON_SHARED_INC)",
    "domains.<name>.hosts": "(nvirtd policy: where `nvirtd drain` moves it)",
    "domains.<name>.evacuate": "(nvirtd policy: what `nvirtd drain` does with it)",
    "domains.<name>.migration": "",
    "domains.<name>.migration.timeout": "(nvirtd policy: `virDomainAbortJob`, or `virDomainMigrateStartPostCopy`, after it)",
    "domains.<name>.migration.onTimeout": "postcopy: `VIR_MIGRATE_POSTCOPY`, then `virDomainMigrateStartPostCopy`",
    "domains.<name>.migration.autoConverge": "`VIR_MIGRATE_AUTO_CONVERGE`",
    "domains.<name>.migration.tls": "`VIR_MIGRATE_TLS`",
    "domains.<name>.migration.bandwidth": "`VIR_MIGRATE_PARAM_BANDWIDTH` (MiB/s; libvirt applies it to the disks' copy too)",
    "domains.<name>.startAfterAgent": "(nvirtd policy: `guest-ping` through `virDomainQemuAgentCommand`)",
    "domains.<name>.disks.<name>.nix": "",
    "domains.<name>.disks.<name>.nix.flake": "(what builds the base image: `nix build FLAKEREF#...`)",
    "domains.<name>.disks.<name>.nix.attribute": "(what builds the base image: `nix build PATH#...`)",
    "domains.<name>.disks.<name>.nix.size": "`qemu-img create ... SIZE` of the overlay",
    "domains.<name>.disks.<name>.nix.unit": "",
    "domains.<name>.disks.<name>.nix.onImageChange": "(nvirtd policy)",
    "domains.<name>.disks.<name>.image": "",
    "domains.<name>.disks.<name>.image.size": "`qemu-img create -b BASE ... SIZE` of the overlay",
    "domains.<name>.disks.<name>.image.unit": "",
    "domains.<name>.disks.<name>.image.onImageChange": "(nvirtd policy)",
    "domains.<name>.cloudInit": "`<disk device='cdrom'>` on virtio-scsi: IMAGES/NAME-cidata-DIGEST.iso (label cidata)",
    "domains.<name>.cloudInit.userData": "the seed's `user-data`",
    "domains.<name>.cloudInit.userDataFile": "the seed's `user-data`",
    "domains.<name>.cloudInit.metaData": "the seed's `meta-data`",
    "domains.<name>.cloudInit.metaDataFile": "the seed's `meta-data`",
    "domains.<name>.cloudInit.networkConfig": "the seed's `network-config`",
    "domains.<name>.cloudInit.networkConfigFile": "the seed's `network-config`",
    "domains.<name>.backup": "(nvirtd policy: `nvirtd backup` on a schedule)",
    "domains.<name>.backup.every": "(nvirtd policy)",
    "domains.<name>.backup.keep": "(nvirtd policy)",
    "domains.<name>.backup.to": "(nvirtd policy)",
    "domains.<name>.interfaces": "",
    "domains.<name>.interfaces.<name>": "`<interface>`",
    "domains.<name>.interfaces.<name>.network": "`<interface type='network'><source network=>`",
    "domains.<name>.interfaces.<name>.bridge": "`<interface type='bridge'><source bridge=>`",
    "domains.<name>.interfaces.<name>.mac": "`<mac address=>`",
    "domains.<name>.interfaces.<name>.model": "`<model type=>`",
    "domains.<name>.cpu.model": "`<cpu mode='host-passthrough'|'host-model'>`, or `<cpu mode='custom'><model>`",
    "domains.<name>.cpu.topology": "`<cpu><topology sockets= dies='1' cores= threads=>`",
    "domains.<name>.cpu.topology.sockets": "",
    "domains.<name>.cpu.topology.cores": "",
    "domains.<name>.cpu.topology.threads": "",
    "domains.<name>.cpu.pin": "`<cputune><vcpupin vcpu= cpuset=>`",
    "domains.<name>.cpu.emulatorPin": "`<cputune><emulatorpin cpuset=>`",
    "domains.<name>.memory.hugepages": "`<memoryBacking><hugepages><page size= unit=>`",
    "domains.<name>.memory.hugepages.size": "",
    "domains.<name>.memory.hugepages.unit": "",
    "domains.<name>.numa": "`<cpu><numa><cell id= cpus= memory= unit='MiB'>`",
    "domains.<name>.hostdevs": "",
    "domains.<name>.hostdevs.<name>": "`<hostdev mode='subsystem' type= managed='yes'>` with `<alias name='ua-hostdev-NAME'>`",
    "domains.<name>.hostdevs.<name>.type": "`type=`",
    "domains.<name>.hostdevs.<name>.address": "pci: `<source><address domain= bus= slot= function=>`; usb: `<address bus= device=>`",
    "domains.<name>.hostdevs.<name>.vendor": "`<source><vendor id=>`",
    "domains.<name>.hostdevs.<name>.product": "`<source><product id=>`",
    "domains.<name>.shares": "`<memoryBacking>` shared memfd",
    "domains.<name>.shares.<name>": "`<filesystem type='mount'><driver type='virtiofs'><target dir=TAG>`",
    "domains.<name>.shares.<name>.path": "`<source dir=>`",
    "domains.<name>.shares.<name>.readOnly": "`<readonly/>`",
    "networks.<name>": "`<network>`, ownership in `<metadata>`",
    "networks.<name>.uuid": "`<uuid>`",
    "networks.<name>.forward": "`<forward mode=>` (none for isolated)",
    "networks.<name>.bridge": "`<bridge name=>` (default nv-HASH)",
    "networks.<name>.ip": "",
    "networks.<name>.ip.address": "`<ip address=>`",
    "networks.<name>.ip.prefix": "`<ip prefix=>`",
    "networks.<name>.dhcp": "`<ip><dhcp>`",
    "networks.<name>.dhcp.range": "",
    "networks.<name>.dhcp.range.start": "`<range start=>`",
    "networks.<name>.dhcp.range.end": "`<range end=>`",
    "networks.<name>.dhcp.hosts": "`<host mac= ip= name=>`",
    "networks.<name>.domain": "`<domain name= localOnly='yes'>`",
    "networks.<name>.ip6": "`<ip family='ipv6'>`",
    "networks.<name>.ip6.address": "`<ip family='ipv6' address=>`",
    "networks.<name>.ip6.prefix": "`<ip family='ipv6' prefix=>`",
    "networks.<name>.dns": "`<dns>`",
    "networks.<name>.dns.hosts": "`<dns><host ip=><hostname>`",
}


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return schema["$defs"][node["$ref"].split("/")[-1]]
    for key in ("anyOf", "allOf"):
        for option in node.get(key, []):
            if option.get("type") != "null":
                resolved = _resolve(schema, option)
                if resolved.get("properties") or resolved.get("additionalProperties") or resolved.get("enum"):
                    return resolved
    return node


def _type(schema: dict[str, Any], node: dict[str, Any]) -> str:
    target = _resolve(schema, node)
    if "enum" in target:
        return " \\| ".join(f"`{v}`" for v in target["enum"])
    if "properties" in target:
        return "object"
    if target.get("type") == "object":
        return "map of name → object" if isinstance(target.get("additionalProperties"), dict) else "object"
    kinds = [o.get("type") for o in node.get("anyOf", [node]) if o.get("type") not in (None, "null")]
    return "/".join(kinds) or target.get("type", "")


def options(schema: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Every option, depth first: path, type, default, description."""
    schema = schema or ConfigFile.model_json_schema(by_alias=True)
    rows: list[dict[str, str]] = []

    def walk(prefix: str, model: dict[str, Any]) -> None:
        for key, node in model.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            target = _resolve(schema, node)
            default = node.get("default", "")
            if default in ({}, None):
                default = ""
            rows.append({"path": path, "type": _type(schema, node), "default": json.dumps(default) if default != "" else "",
                         "description": node.get("description", target.get("description", "")).replace("\n", " "),
                         "required": "yes" if key in model.get("required", []) else ""})
            if "properties" in target:
                walk(path, target)
            elif isinstance(target.get("additionalProperties"), dict):
                inner = _resolve(schema, target["additionalProperties"])
                if "properties" not in inner:  # a map of plain values
                    rows[-1]["type"] = f"map of name → {inner.get('format') or inner.get('type', 'value')}"
                    continue
                rows[-1]["type"] = "map of name → object"
                rows.append({"path": f"{path}.<name>", "type": "object", "default": "",
                             "description": inner.get("description", "").split("\n")[0], "required": ""})
                walk(f"{path}.<name>", inner)
    walk("", schema)
    rows.sort(key=lambda r: r["path"].split("."))  # alphabetical, each entry before its fields
    return [r for r in rows if r["path"] not in ("domains", "networks")]


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `nvirtd reference` (a test fails when this file and the",
        "models disagree). Every file in `/etc/nvirt.d/*.json` is `{\"domains\": {...}, \"networks\": {...}}`;",
        "`<name>` is a name you choose (letters, digits, `.`, `_`, `-`, at most 63 characters, not",
        "starting with `.` or `-`). Unknown keys are errors. `nvirtd schema` prints the JSON Schema for editors.",
        "",
        "Values are taken strictly, as JSON writes them: an *integer* is a JSON integer (not `\"2\"`, not",
        "`2.0`, not `true`); a *boolean* is `true` or `false` (not `\"yes\"`, not `1`); a closed set (`a` \\|",
        "`b`) is one of its strings; an address is a string (`\"10.0.0.1\"`, never an integer). A key given",
        "twice in one object is an error naming both lines (JSON would silently keep the last), and so are",
        "`NaN`, `Infinity`, nesting deeper than 64 levels and numbers of more than 4,300 digits. Limits",
        "are libvirt's and qemu-img's: memory at most 9007199254740991 KiB (about 8 EiB), a nix overlay at",
        "most 2048 T, a boot order at most 4294967295. A file may be at most 8 MiB, and at most its first 20",
        "errors are reported. A MAC or UUID used twice (in one file or two) holds the file that brought it",
        "at its last good state.",
        "",
        "| option | type | default | becomes in libvirt | description |",
        "|---|---|---|---|---|",
    ]
    for row in options():
        path = row["path"]
        libvirt = LIBVIRT.get(path, "?")
        required = " **(required)**" if row["required"] else ""
        lines.append(f"| `{path}`{required} | {row['type']} | {row['default']} | {libvirt} | {row['description']} |")
    return "\n".join(lines) + "\n"
