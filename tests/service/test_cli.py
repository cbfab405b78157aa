"""The command line as an administrator uses it: check, schema, plan, status, reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


from tests.conftest import domain, write_json
from tests.service.test_notify import spawn, stop


def nvirtd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=60, **kw)


def test_check_ok_and_errors_with_exit_codes(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    ok = nvirtd("check", str(dirs["config"]))
    assert ok.returncode == 0 and "OK (1 files, 1 domains, 0 networks)" in ok.stdout
    (dirs["config"] / "b.json").write_text('{"domains": {"db": {"memory": {"amount": 1, "unit": "GiG"}}}}')
    bad = nvirtd("check", str(dirs["config"]))
    assert bad.returncode == 1
    assert "b.json: domains.db.memory.unit: 'GiG' is not one of b, bytes, KB" in bad.stderr


def test_check_ignores_editor_and_package_leftovers(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    for junk in ("a.json~", ".a.json.swp", "a.json.bak", "a.json.dpkg-old", "a.json.tmp", ".hidden.json", "4913"):
        (dirs["config"] / junk).write_text("not json at all")
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 0, result.stderr


def test_check_refuses_files_others_may_write(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}}, mode=0o664)
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 1
    assert "is writable by group or others (mode -rw-rw-r--): refused" in result.stderr


def test_check_refuses_a_symlink_pointing_outside(dirs, tmp_path):
    target = write_json(tmp_path / "elsewhere.json", {"domains": {"web": domain()}})
    (dirs["config"] / "a.json").symlink_to(target)
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 1 and "is a symlink to" in result.stderr and "outside" in result.stderr


def test_check_refuses_a_world_writable_directory(dirs):
    dirs["config"].chmod(0o777)
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 1 and "config directory" in result.stderr and "writable by group or others" in result.stderr


def test_schema_is_json_schema_with_the_options():
    result = nvirtd("schema")
    schema = json.loads(result.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    domain_props = schema["$defs"]["Domain"]["properties"]
    assert {"cpu", "memory", "enableVnc", "disks", "state", "restartOnChange"} <= set(domain_props)
    assert schema["$defs"]["Disk"]["properties"]["readOnly"]["type"] == "boolean"


def test_plan_shows_changes_without_making_them(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()},
                                           "networks": {"lab": {"ip": {"address": "10.5.0.1"}}}})
    result = nvirtd("plan", "--connect", "test:///default", "--config-dir", str(dirs["config"]),
                    "--state-dir", str(dirs["state"]))
    assert result.returncode == 2, result.stderr
    assert "domain web: define, set-autostart(true), start" in result.stdout
    assert "network lab: define, set-autostart(true), start" in result.stdout
    assert "domain test" not in result.stdout  # the driver's own domain is not ours
    empty = write_json(dirs["config"] / "a.json", {})
    assert empty.exists()
    nothing = nvirtd("plan", "--connect", "test:///default", "--config-dir", str(dirs["config"]))
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr


def test_status_and_reload_against_a_running_daemon(dirs, tmp_path):
    from tests.service.test_notify import NotifySocket
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    sock = NotifySocket(tmp_path / "n.sock")
    proc = spawn(dirs, sock, extra=("--no-watch",))
    try:
        sock.receive_until(lambda m: m.startswith("READY=1"))
        table = nvirtd("status", "--state-dir", str(dirs["state"]))
        assert table.returncode == 0
        assert "nvirtd: 1 domain: 1 running" in table.stdout
        assert any(line.split()[:3] == ["web", "running", "-"] for line in table.stdout.splitlines())
        write_json(dirs["config"] / "a.json", {"domains": {"web": domain(), "db": domain()}})
        reload = nvirtd("reload", "--state-dir", str(dirs["state"]))
        assert reload.returncode == 0, reload.stderr
        data = json.loads(nvirtd("status", "--state-dir", str(dirs["state"]), "--json").stdout)
        assert data["daemon"]["running"] is True
        assert {d["name"] for d in data["domains"]} == {"web", "db"}
        (dirs["config"] / "a.json").write_text('{"domains": {"web": {"cpu": 3}}}')
        failed = nvirtd("reload", "--state-dir", str(dirs["state"]))
        assert failed.returncode == 1 and "a.json: domains.web.cpu: expected an object" in failed.stderr
    finally:
        assert stop(proc) == 0
        sock.close()
    after = nvirtd("status", "--state-dir", str(dirs["state"]))
    assert "nvirtd is not running" in after.stdout


def test_status_without_a_daemon_says_so(tmp_path):
    result = nvirtd("status", "--state-dir", str(tmp_path))
    assert result.returncode == 1 and "is nvirtd running?" in result.stderr


def test_burst_of_sighups_and_file_writes_ends_with_the_last_config(dirs, tmp_path):
    from tests.service.test_notify import NotifySocket
    write_json(dirs["config"] / "a.json", {"domains": {"v0": domain()}})
    sock = NotifySocket(tmp_path / "n.sock")
    proc = spawn(dirs, sock)
    try:
        sock.receive_until(lambda m: m.startswith("READY=1"))
        clients = [subprocess.Popen([sys.executable, "-m", "daemon", "reload", "--state-dir", str(dirs["state"])],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(5)]
        t0 = time.monotonic()
        for i in range(1000):
            path = dirs["config"] / "a.json"
            tmp = dirs["config"] / ".a.json.tmp"
            tmp.write_text(json.dumps({"domains": {f"v{i % 7}": domain()}}))
            os.replace(tmp, path)
            if i % 10 == 0:
                proc.send_signal(signal.SIGHUP)
        elapsed = time.monotonic() - t0
        final = {"domains": {"final": domain(256)}}
        write_json(dirs["config"] / "a.json", final)
        proc.send_signal(signal.SIGHUP)
        for client in clients:
            assert client.wait(timeout=60) == 0, client.stderr.read()
        deadline = time.monotonic() + 20
        names: set[str] = set()
        while time.monotonic() < deadline:
            data = json.loads((dirs["state"] / "status.json").read_text())
            names = {d["name"] for d in data["domains"] if d["phase"] == "running"}
            if names == {"final"} and len(data["domains"]) == 1:
                break
            time.sleep(0.1)
        assert names == {"final"}
        assert proc.poll() is None
        assert elapsed < 10
    finally:
        assert stop(proc) == 0
        sock.close()


def test_purge_is_explicit_and_refuses_declared_domains(dirs):
    from daemon.adapters.images import Images
    overlay = dirs["images"] / "old-root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), "16M"], check=True)
    images = Images(state_dir=str(dirs["state"]))
    images._record(str(overlay), backing="", domain="old", disk="root")
    write_json(dirs["config"] / "a.json", {"domains": {"old": domain()}})
    common = ["--connect", "test:///default", "--config-dir", str(dirs["config"]), "--state-dir", str(dirs["state"])]
    refused = nvirtd("purge", "old", "--yes", *common)
    assert refused.returncode == 1 and "declared in a.json" in refused.stderr and overlay.exists()
    write_json(dirs["config"] / "a.json", {})
    dry = nvirtd("purge", "old", *common)
    assert dry.returncode == 0 and str(overlay) in dry.stdout and overlay.exists()
    done = nvirtd("purge", "old", "--yes", *common)
    assert done.returncode == 0 and f"deleted {overlay}" in done.stdout and not overlay.exists()
    assert Images(state_dir=str(dirs["state"])).registry() == {}
