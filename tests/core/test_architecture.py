"""The layering the architecture promises, checked on the source.

Every import is resolved to the module it names, relative ones included (the
package uses only relative imports, so a check that skipped them would check
nothing), and held to the layer rules below. The checker is shown to catch a
forbidden import on a small bad package made by the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

DAEMON = Path(__file__).resolve().parents[2] / "daemon"
STDLIB_OK = {"__future__", "dataclasses", "enum", "hashlib", "ipaddress", "json", "re", "typing", "uuid",
             "xml", "difflib", "pathlib", "collections", "functools", "copy"}
# layer of a module (by its first part below the package) -> the layers it may import
# the rest (app, commands, purge, __main__, connection, reloads, ...) is the shell, which may import any layer
ALLOWED = {
    # the pipeline is the same for every kind: it knows no adapter, only the kinds it is given
    "pipeline": {"core", "errors", "runtime", "status", "configstore"},
    "domain_kind": {"core", "adapters", "runtime", "errors", "domain_moves"},
    "domain_moves": {"core", "adapters", "errors"},  # the fleet's side of the domain kind
    "network_kind": {"core", "adapters", "runtime", "errors"},
    "configstore": {"core", "configfiles", "declared", "runtime", "settings", "status"},
    "status": {"core", "runtime"},
    "core": {"core"},
    "errors": set(),
    "runtime": {"runtime"},
    "adapters": {"adapters", "core", "errors", "runtime"},
    "sources": {"sources", "adapters", "runtime", "core", "errors", "configfiles"},
}


def imports(path: Path, package_root: Path) -> set[str]:
    """Every module `path` imports, absolute dotted names; relative imports resolved."""
    module = path.relative_to(package_root.parent).with_suffix("").parts
    package = module[:-1] if path.name != "__init__.py" else module
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = (node.module or "").split(".")
            else:
                base = list(package[:len(package) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
            found.add(".".join(base))
            found |= {".".join(base + [a.name]) for a in node.names if (package_root.parent.joinpath(*base, a.name)).exists()
                      or package_root.parent.joinpath(*base, a.name + ".py").exists()}
    return found


def layer(module: str, package: str) -> str | None:
    parts = module.split(".")
    if parts[0] != package or len(parts) < 2:
        return None
    return parts[1]


def violations(package_root: Path) -> list[str]:
    package = package_root.name
    found = []
    for path in sorted(package_root.rglob("*.py")):
        own = layer(".".join(path.relative_to(package_root.parent).with_suffix("").parts), package)
        for target in sorted(imports(path, package_root)):
            other = layer(target, package)
            if other is None or other == own:
                continue
            if own in ALLOWED and other not in ALLOWED[own]:
                found.append(f"{path.relative_to(package_root)} imports {target} ({own} may not import {other})")
    return found


def test_every_internal_import_follows_the_layers():
    assert violations(DAEMON) == []


def test_the_checker_catches_a_forbidden_relative_import(tmp_path):
    bad = tmp_path / "daemon"
    for sub in ("core", "adapters", "runtime"):
        (bad / sub).mkdir(parents=True)
        (bad / sub / "__init__.py").write_text("")
    (bad / "__init__.py").write_text("")
    (bad / "adapters" / "hypervisor.py").write_text("import libvirt\n")
    (bad / "core" / "plan.py").write_text("from ..adapters.hypervisor import Hypervisor\nfrom . import spec\n")
    (bad / "core" / "spec.py").write_text("")
    (bad / "runtime" / "queue.py").write_text("from ..core import plan\n")
    assert violations(bad) == [
        "core/plan.py imports daemon.adapters.hypervisor (core may not import adapters)",
        "runtime/queue.py imports daemon.core (runtime may not import core)",
        "runtime/queue.py imports daemon.core.plan (runtime may not import core)",
    ]


def _top_level(path: Path) -> set[str]:
    return {m.split(".")[0] for m in imports(path, DAEMON) if not m.startswith("daemon")}


def test_core_is_pure():
    for path in sorted((DAEMON / "core").glob("*.py")):
        bad = _top_level(path) - STDLIB_OK - {"pydantic"}
        assert not bad, f"{path.name} imports {bad}: daemon/core must stay free of I/O libraries"


def test_only_the_hypervisor_adapter_imports_libvirt():
    offenders = [p.relative_to(DAEMON) for p in DAEMON.rglob("*.py")
                 if {"libvirt", "libvirtaio"} & _top_level(p)
                 and not (p.parent.name == "adapters" and p.name.startswith("hypervisor"))]
    assert offenders == []


def test_only_proc_starts_subprocesses():
    offenders = []
    for p in DAEMON.rglob("*.py"):
        text = p.read_text()
        if p.name != "proc.py" and ("subprocess" in _top_level(p) or "create_subprocess" in text or "os.system" in text):
            offenders.append(p.relative_to(DAEMON))
    assert offenders == []


def test_modules_stay_small():
    big = {str(p.relative_to(DAEMON)): n for p in DAEMON.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}
