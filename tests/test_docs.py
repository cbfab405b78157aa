"""The docs, examples and the NixOS module say what the code does."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from daemon.reference import LIBVIRT, markdown, options
from tests.conftest import REPO, have, nix_env

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())


def test_configuration_reference_matches_the_models():
    assert (REPO / "docs" / "configuration.md").read_text() == markdown(), \
        "docs/configuration.md is stale: run `nvirtd reference > docs/configuration.md`"


def test_every_option_says_what_it_becomes_in_libvirt():
    paths = {row["path"] for row in options()}
    assert paths - set(LIBVIRT) == set(), "options without a LIBVIRT entry in daemon/reference.py"
    assert set(LIBVIRT) - paths == set(), "LIBVIRT entries for options that no longer exist"


def test_examples_exist_for_each_use_case():
    assert {p.name for p in EXAMPLES} >= {"nixos-on-nixos", "existing-image-with-installer",
                                          "uefi-tpm-virtiofs", "bridged"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_nvirtd_check(example):
    for path in example.rglob("*"):
        if path.is_file():
            path.chmod(0o644)  # a checkout may be group-writable; /etc/nvirt.d must not be
    example.chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "daemon", "check", str(example)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "OK (1 files" in result.stdout


def test_nix_files_parse():
    if not have("nix-instantiate"):
        pytest.skip("nix-instantiate not installed")
    files = [*REPO.glob("contrib/nixos/*.nix"), *REPO.glob("examples/**/*.nix"), *REPO.glob("tests/nix/*.nix")]
    for path in files:
        result = subprocess.run(["nix-instantiate", "--parse", str(path)], capture_output=True, text=True,
                                env={**os.environ, **nix_env()})
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_readme_commands_are_the_scripts():
    readme = (REPO / "README.md").read_text()
    for script in ("scripts/demo", "scripts/test"):
        assert script in readme and os.access(REPO / script, os.X_OK)
    ci = (REPO / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


@pytest.mark.parametrize("doc", ["README.md", "docs/getting-started.md"])
def test_json_examples_in_the_docs_are_valid_configs(doc):
    from daemon.core.config import merge, parse_text
    text = (REPO / doc).read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    blocks += re.findall(r"<<'EOF'\n\s*(\{.*?\})\n\s*EOF", text, re.S)
    assert blocks, f"no JSON example in {doc}"
    for block in blocks:
        parsed = parse_text("example.json", block)
        assert parsed.ok, parsed.errors
        assert not merge({"example.json": parsed}, {}).errors
