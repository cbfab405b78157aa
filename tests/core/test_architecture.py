"""The layering the architecture promises, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

DAEMON = Path(__file__).resolve().parents[2] / "daemon"
STDLIB_OK = {"__future__", "dataclasses", "enum", "hashlib", "ipaddress", "json", "re", "typing", "uuid",
             "xml", "difflib", "pathlib", "collections", "functools", "copy"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add((node.module or "").split(".")[0])
    return found


def test_core_is_pure():
    for path in sorted((DAEMON / "core").glob("*.py")):
        bad = imports(path) - STDLIB_OK - {"pydantic"}
        assert not bad, f"{path.name} imports {bad}: daemon/core must stay free of I/O libraries"


def test_only_the_hypervisor_adapter_imports_libvirt():
    offenders = [p.relative_to(DAEMON) for p in DAEMON.rglob("*.py")
                 if {"libvirt", "libvirtaio"} & imports(p)
                 and not (p.parent.name == "adapters" and p.name.startswith("hypervisor"))]
    assert offenders == []


def test_only_proc_starts_subprocesses():
    offenders = []
    for p in DAEMON.rglob("*.py"):
        text = p.read_text()
        if p.name != "proc.py" and ("subprocess" in imports(p) or "create_subprocess" in text or "os.system" in text):
            offenders.append(p.relative_to(DAEMON))
    assert offenders == []


def test_modules_stay_small():
    big = {str(p.relative_to(DAEMON)): n for p in DAEMON.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}
