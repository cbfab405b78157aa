"""The unit files pass systemd-analyze verify (where the installed systemd knows their type)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
UNITS = REPO / "contrib" / "systemd"


def systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True).stdout
    return int(re.search(r"systemd (\d+)", out).group(1))


def verify(unit: Path, tmp_path: Path) -> str:
    """Verify a copy whose ExecStart/ExecReload point at this checkout's nvirtd."""
    nvirtd = str(Path(sys.executable).parent / "nvirtd")
    text = unit.read_text().replace("/usr/bin/nvirtd", nvirtd)
    copy = tmp_path / "nvirtd.service"
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    # lines about other units (libvirtd missing on this machine) are not ours to judge
    return "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                     if "nvirtd.service" in line and "libvirtd.service" not in line)


def test_legacy_unit_verifies_clean(tmp_path):
    assert verify(UNITS / "systemd-252" / "nvirtd.service", tmp_path) == ""


def test_notify_reload_unit_verifies_where_systemd_knows_the_type(tmp_path):
    out = verify(UNITS / "nvirtd.service", tmp_path)
    if systemd_version() >= 253:
        assert out == ""
    else:  # 252 does not know notify-reload; that must be its only complaint
        assert all("notify-reload" in line for line in out.splitlines()), out
        assert "notify-reload" in out


def test_units_differ_only_in_how_they_reload():
    strip = lambda text: [l for l in text.splitlines() if l.strip() and not l.startswith("#")]  # noqa: E731
    new = strip((UNITS / "nvirtd.service").read_text())
    old = strip((UNITS / "systemd-252" / "nvirtd.service").read_text())
    assert set(new) ^ set(old) == {"Type=notify-reload", "Type=notify",
                                   "ExecReload=/usr/bin/nvirtd reload --state-dir /var/lib/nvirtd"}
    for line in ("KillMode=mixed", "WatchdogSec=30s", "After=libvirtd.service virtqemud.service nix-daemon.service network-online.target"):
        assert line in new
