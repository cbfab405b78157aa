"""Two real hosts on this machine for the fleet's tests (scripts/fleet-hosts): h1 and h2,
each a libvirtd in its own mount, network and UTS namespaces, and an nvirtd for each,
run inside its host's namespaces as the service would be (`nvirtd run`, its own
/var/lib/nvirtd), all of them reading one config directory."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

REPO = Path(__file__).resolve().parents[2]
TOP = Path("/var/lib/nvirtd-fleet")
HOSTS = ("h1", "h2")


@dataclass
class Host:
    name: str
    pid: int
    daemon: subprocess.Popen | None = None
    log: Path | None = None
    _conn: libvirt.virConnect | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        """Its /var/lib/nvirtd, seen from outside."""
        return TOP / self.name / "nvirtd"

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            self._conn = libvirt.open(f"qemu+unix:///system?socket={TOP / self.name}/run/libvirt/libvirt-sock")
        return self._conn

    def runs(self, name: str) -> bool:
        try:
            return self.conn.lookupByName(name).isActive() == 1
        except libvirt.libvirtError:
            return False

    def guest_runs(self, name: str) -> bool:
        """Whether its guest runs here (not only an incoming migration's paused domain)."""
        try:
            return self.conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
        except libvirt.libvirtError:
            return False

    def holds(self, name: str) -> bool:
        try:
            self.conn.lookupByName(name)
            return True
        except libvirt.libvirtError:
            return False

    def console(self, name: str) -> str:
        path = self.root / "console" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def in_host(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "-u", "--", *argv]

    def start_daemon(self, config: Path, peers: dict[str, str], build_command: tuple[str, ...], env: dict,
                     log: Path) -> None:
        argv = [sys.executable, "-m", "daemon", "run", "--config-dir", str(config), "--no-trust-checks",
                "--state-dir", "/var/lib/nvirtd", "--images-dir", "/var/lib/nvirtd/images", "--host", self.name,
                "--build-command", shlex.join(build_command), "--peer-interval", "1"]
        for host, uri in peers.items():
            argv += ["--peer", f"{host}={uri}"]
        self.log = log
        with open(log, "ab") as out:
            self.daemon = subprocess.Popen(self.in_host(*argv), stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                           env={**os.environ, **env, "PYTHONPATH": str(REPO)})

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            self.daemon.wait(timeout=20)
        self.daemon = None

    def nvirtd(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """An nvirtd command run on this host."""
        return subprocess.run(self.in_host(sys.executable, "-m", "daemon", *args), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    def passes(self, name: str) -> list[dict]:
        """Every pass of `name` this host's nvirtd logged that did something."""
        assert self.log is not None
        found = []
        for line in self.log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "reconciled" and entry.get("domain") == name:
                found.append(entry)
        return found

    def close(self) -> None:
        self.stop_daemon()
        if self._conn is not None:
            self.clean()
            self._conn.close()
            self._conn = None

    def clean(self) -> None:
        """No nvt-* domain left, nor their files."""
        for dom in self.conn.listAllDomains():
            if dom.name().startswith("nvt-"):
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
                except libvirt.libvirtError:
                    pass
        subprocess.run(["rm", "-rf", str(self.root / "images"), str(self.root / "console")], check=False)


def fleet_up() -> dict[str, Host]:
    out = subprocess.run([str(REPO / "scripts" / "fleet-hosts"), "up"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    hosts = {}
    for line in out.stdout.splitlines():
        name, pid, _sock = line.split()
        hosts[name] = Host(name, int(pid))
    for host in hosts.values():  # what an earlier test left
        host.clean()
    return hosts


def fleet_down() -> None:
    subprocess.run([str(REPO / "scripts" / "fleet-hosts"), "down"], capture_output=True, check=False)


def peer_uri(host: str) -> str:
    """How one host's libvirt (and its nvirtd) reaches another's: by name, over TCP."""
    return f"qemu+tcp://{host}/system"
