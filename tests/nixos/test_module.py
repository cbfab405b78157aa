"""contrib/nixos/module.nix evaluated by nixpkgs' own module system (tests/nixos/eval.nix).

nixpkgs' lib is found as `<nixpkgs/lib>` on NIX_PATH first, then in ../shared/nixpkgs-lib
next to this checkout; without either (or without nix-instantiate) these tests skip and
say why. Only the few NixOS options the module sets are stubs; the option types, their
checks and their errors are the module system's own.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.core.spec import ConfigFile

REPO = Path(__file__).resolve().parents[2]
EVAL = REPO / "tests" / "nixos" / "eval.nix"
SHARED_LIB = REPO.parent / "shared" / "nixpkgs-lib" / "lib"
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*/*.nix") if p.with_suffix(".json").exists())


def find_lib() -> tuple[str | None, str]:
    try:
        found = subprocess.run(["nix-instantiate", "--find-file", "nixpkgs/lib"], capture_output=True, text=True)
    except FileNotFoundError:
        return None, "nix-instantiate is not installed"
    if found.returncode == 0:
        return found.stdout.strip(), "<nixpkgs/lib> from NIX_PATH"
    if (SHARED_LIB / "default.nix").exists():
        return str(SHARED_LIB), str(SHARED_LIB)
    return None, f"no nixpkgs lib: neither <nixpkgs/lib> on NIX_PATH nor {SHARED_LIB}"


@pytest.fixture(scope="module")
def lib() -> str:
    path, where = find_lib()
    if path is None:
        pytest.skip(f"cannot evaluate the NixOS module: {where}")
    return path


def evaluate(lib: str, configuration: str | Path, attr: str = "nvirtdJson", *, legacy: bool = False,
             tmp: Path | None = None) -> subprocess.CompletedProcess:
    if isinstance(configuration, str):
        assert tmp is not None
        path = tmp / "configuration.nix"
        path.write_text(configuration)
        configuration = path
    argv = ["nix-instantiate", "--eval", "--strict", "--json", str(EVAL), "--arg", "lib", f"import {lib}",
            "--arg", "configuration", str(configuration), "-A", attr]
    if legacy:
        argv += ["--arg", "extraModules", f"[ {REPO / 'contrib' / 'nixos' / 'legacy.nix'} ]"]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "NIX_STATE_DIR": str(tmp)}
                          if tmp is not None else None)


def evaluated(lib: str, configuration: str | Path, attr: str = "nvirtdJson", **kw) -> object:
    result = evaluate(lib, configuration, attr, **kw)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.parent.name)
def test_each_example_written_as_module_options_gives_its_json(lib, example, tmp_path):
    produced = evaluated(lib, example, tmp=tmp_path)
    wanted = json.loads(example.with_suffix(".json").read_text())
    # the module writes every default out; what nvirtd reads from the two is the same
    assert ConfigFile.model_validate(produced) == ConfigFile.model_validate(wanted)
    config = tmp_path / "nvirt.d"
    config.mkdir(mode=0o755)
    (config / "nixos.json").write_text(json.dumps(produced))
    (config / "nixos.json").chmod(0o644)
    for companion in example.parent.iterdir():  # files the example's config names (cloud-init parts)
        if companion.is_file() and companion.suffix not in (".json", ".nix", ".md"):
            (config / companion.name).write_text(companion.read_text())
            (config / companion.name).chmod(0o600)
    check = subprocess.run([sys.executable, "-m", "daemon", "check", str(config)], capture_output=True, text=True,
                           cwd=REPO)
    assert check.returncode == 0, check.stderr


def test_a_wrong_type_fails_at_evaluation_naming_the_option(lib, tmp_path):
    result = evaluate(lib, '{ services.nvirtd = { enable = true; domains.web = { cpu.amount = "two"; '
                           'memory.amount = 1; }; }; }', tmp=tmp_path)
    assert result.returncode != 0
    assert "services.nvirtd.domains.web.cpu.amount" in result.stderr and "is not of type" in result.stderr


def test_an_unknown_option_fails_at_evaluation_naming_it(lib, tmp_path):
    result = evaluate(lib, "{ services.nvirtd = { enable = true; domains.web = { cpus = 2; memory.amount = 1; }; }; }",
                      tmp=tmp_path)
    assert result.returncode != 0
    assert "services.nvirtd.domains.web.cpus" in result.stderr and "does not exist" in result.stderr


def test_a_wrong_enum_value_names_the_option_and_the_choices(lib, tmp_path):
    result = evaluate(lib, '{ services.nvirtd = { enable = true; domains.web = { memory.amount = 1; '
                           'disks.root = { type = "iscsi"; path = "/x"; }; }; }; }', tmp=tmp_path)
    assert result.returncode != 0
    assert "services.nvirtd.domains.web.disks.root.type" in result.stderr and '"nix"' in result.stderr


# ---- the unit ---------------------------------------------------------------------------
def contrib_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(REPO / "contrib" / "systemd" / "nvirtd.service")
    return unit


def systemd_value(value: object) -> object:
    """A value as systemd reads it: NixOS writes true/false and lists as space-separated words."""
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    text = str(value)
    return {"yes": True, "true": True, "no": False, "false": False}.get(text, text)


def test_the_module_unit_is_the_contrib_unit(lib, tmp_path):
    unit = evaluated(lib, "{ services.nvirtd.enable = true; }", "unit", tmp=tmp_path)
    contrib = contrib_unit()
    ours = {k: systemd_value(v) for k, v in unit["serviceConfig"].items() if k != "ExecStart"}
    theirs = {k: systemd_value(v) for k, v in contrib["Service"].items() if k != "ExecStart"}
    assert ours == theirs  # Type=notify-reload, hardening, paths, kill mode, timeouts: all of them
    assert unit["wants"] == contrib["Unit"]["Wants"].split()
    assert unit["after"] == contrib["Unit"]["After"].split()
    assert unit["wantedBy"] == contrib["Install"]["WantedBy"].split()

    def options(argv: list[str]) -> dict[str, str]:
        return {a: b for a, b in zip(argv, argv[1:]) if a in ("--instance", "--config-dir", "--state-dir")}
    ours_argv = shlex.split(unit["serviceConfig"]["ExecStart"])
    assert ours_argv[0].endswith("/bin/nvirtd") and ours_argv[1] == "run"
    assert options(ours_argv) == options(shlex.split(contrib["Service"]["ExecStart"]))
    # what only NixOS knows: builds through nix-daemon, with the host's nixpkgs
    assert unit["environment"]["NIX_REMOTE"] == "daemon" and unit["environment"]["NIX_PATH"].startswith("nixpkgs=")
    assert {"nix", "qemu", "iproute2", "git"} <= set(unit["path"])


def test_the_instance_and_start_concurrency_reach_execstart(lib, tmp_path):
    unit = evaluated(lib, '{ services.nvirtd = { enable = true; instance = "lab"; startConcurrency = 4; }; }',
                     "unit", tmp=tmp_path)
    argv = shlex.split(unit["serviceConfig"]["ExecStart"])
    assert argv[argv.index("--instance") + 1] == "lab" and argv[argv.index("--start-concurrency") + 1] == "4"
    assert "--metrics" not in argv  # off by default
    unit = evaluated(lib, '{ services.nvirtd = { enable = true; metrics = "127.0.0.1:9477"; }; }', "unit",
                     tmp=tmp_path)
    argv = shlex.split(unit["serviceConfig"]["ExecStart"])
    assert argv[argv.index("--metrics") + 1] == "127.0.0.1:9477"


# ---- the option tree --------------------------------------------------------------------
def schema_leaves(schema: dict, node: dict, prefix: str) -> set[str]:
    """Option paths of the JSON Schema, nested models as nested options, dicts as <name>."""
    ref = node.get("$ref") or next((o.get("$ref") for o in node.get("anyOf", []) if o.get("$ref")), None)
    target = schema["$defs"][ref.split("/")[-1]] if ref else node
    if "properties" in target:
        leaves: set[str] = set()
        for key, sub in target["properties"].items():
            leaves |= schema_leaves(schema, sub, f"{prefix}.{key}" if prefix else key)
        return leaves
    items = target.get("items")
    if isinstance(items, dict) and (items.get("$ref") or "properties" in items):
        return schema_leaves(schema, items, f"{prefix}.*")  # a list of submodules: the manual's NAME.*.x
    extra = target.get("additionalProperties")
    if isinstance(extra, dict) and (extra.get("$ref") or "properties" in extra):
        return schema_leaves(schema, extra, f"{prefix}.<name>")
    return {prefix}


def test_the_evaluated_option_tree_is_the_json_schema(lib, tmp_path):
    options = evaluated(lib, "{ }", "options", tmp=tmp_path)
    prefix = "services.nvirtd."
    names = {o["name"].removeprefix(prefix) for o in options}
    # an option that is itself a submodule is a branch; its sub-options are the leaves
    leaves = {n for n in names if not any(other.startswith(n + ".") for other in names)}
    ours = {n for n in leaves if n.startswith(("domains.", "networks."))}
    schema = ConfigFile.model_json_schema(by_alias=True)
    assert ours == schema_leaves(schema, schema, "")


# ---- migration from the original module ----------------------------------------------
def migration_example() -> tuple[str, dict]:
    """docs/migration.md's worked example: the old options, and the JSON they must give."""
    text = (REPO / "docs" / "migration.md").read_text()
    old = re.search(r"<!-- evaluated: the original options -->\n```nix\n(.*?)```", text, re.S)
    new = re.search(r"<!-- evaluated: the JSON nvirtd reads -->\n```json\n(.*?)```", text, re.S)
    assert old and new, "docs/migration.md lost its worked example"
    return old.group(1), json.loads(new.group(1))


def test_the_original_options_in_give_the_same_json_out_with_a_warning(lib, tmp_path):
    old, wanted = migration_example()
    assert "libvirt.domains." in old and "services.nvirtd.domains" not in old
    produced = evaluated(lib, old, legacy=True, tmp=tmp_path)
    assert ConfigFile.model_validate(produced) == ConfigFile.model_validate(wanted)
    seed = json.loads((REPO / "tests" / "data" / "seed-module" / "config.json").read_text())
    assert ConfigFile.model_validate(wanted) == ConfigFile.model_validate(seed)  # the seed's own VM
    warnings = evaluated(lib, old, "warnings", legacy=True, tmp=tmp_path)
    assert any("libvirt.domains" in w and "services.nvirtd.domains" in w for w in warnings), warnings


def test_without_the_legacy_module_the_old_options_do_not_exist(lib, tmp_path):
    old, _ = migration_example()
    result = evaluate(lib, old, tmp=tmp_path)
    assert result.returncode != 0 and "libvirt" in result.stderr and "does not exist" in result.stderr


# ---- the package ------------------------------------------------------------------------
def test_the_package_evaluates_against_stubs(lib, tmp_path):
    expr = f"""
      let
        lib = import {lib};
        dep = pname: {{ inherit pname; }};
        python3Packages = {{
          buildPythonApplication = args: args;
          setuptools = dep "setuptools";
          libvirt = dep "libvirt-python"; pydantic = dep "pydantic"; structlog = dep "structlog";
          watchdog = dep "watchdog"; sdnotify = dep "sdnotify"; prometheus-client = dep "prometheus-client"; pycdlib = dep "pycdlib";
        }};
        p = import {REPO / 'contrib' / 'nixos' / 'package.nix'} {{ inherit lib python3Packages; }};
      in {{ inherit (p) pname version; deps = map (d: d.pname) p.dependencies; main = p.meta.mainProgram; }}
    """
    result = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], capture_output=True,
                            text=True, env={**os.environ, "NIX_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    package = json.loads(result.stdout)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert package["pname"] == project["name"] and package["version"] == project["version"]
    declared = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert set(package["deps"]) == declared
    assert package["main"] in project["scripts"]


def test_the_fleet_host_and_peers_reach_execstart_and_parse(lib, tmp_path):
    unit = evaluated(lib, '{ services.nvirtd = { enable = true; host = "h1"; '
                          'peers = { h2 = "qemu+ssh://h2/system"; h3 = "qemu+ssh://h3/system"; }; }; }',
                     "unit", tmp=tmp_path)
    argv = shlex.split(unit["serviceConfig"]["ExecStart"])
    assert argv[argv.index("--host") + 1] == "h1"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--peer"] == ["h2=qemu+ssh://h2/system",
                                                                          "h3=qemu+ssh://h3/system"]
    from daemon.__main__ import parser
    args = parser().parse_args(argv[1:])  # what the module writes, nvirtd reads
    assert args.host == "h1" and args.peer == [("h2", "qemu+ssh://h2/system"), ("h3", "qemu+ssh://h3/system")]
