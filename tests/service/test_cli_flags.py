"""Every flag of every subcommand, run for real: (flag, value, what it must do).

`run` rows use --once against the daemon's own in-process test driver, so each
row is a whole daemon life: start, converge, print the table, exit. A wrong value
is refused by the parser (exit 2) with the flag named, before anything runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import domain, write_json

NIX_DISK = {"root": {"type": "nix", "path": "/etc/nixos/web.nix"}}


@pytest.fixture
def env(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    gone = subprocess.Popen(["true"])
    gone.wait()  # the status of a daemon that is no longer running
    (dirs["state"] / "status.json").write_text(json.dumps({
        "daemon": {"pid": gone.pid}, "summary": "1 domain: 1 running", "reload": {},
        "domains": [{"kind": "domain", "name": "web", "phase": "running", "conditions": [], "changed_at": 0}]}))
    return {k: str(v) for k, v in dirs.items()}


def run_cli(env, *args: str) -> subprocess.CompletedProcess:
    argv = [a.format(**env) for a in args]
    return subprocess.run([sys.executable, "-m", "daemon", *argv], capture_output=True, text=True, timeout=60)


RUN = ("run", "--once", "--connect", "test:///default", "--config-dir", "{config}", "--images-dir", "{images}")
STATE = ("--state-dir", "{state}/run")
ROWS = [
    # run: each flag changes what the daemon does, seen in its output
    (RUN + STATE, 0, "web", "running"),
    (("run", "--once", "-c", "test:///default", "--config-dir", "{config}", *STATE), 0, "web", "running"),
    (RUN + STATE + ("--virt-type", "qemu"), 0, '"virt_type": "qemu"', "stderr"),
    (RUN + STATE + ("--virt-type", "kvm"), 0, '"virt_type": "kvm"', "stderr"),
    (RUN + STATE + ("--virt-type", "auto"), 0, '"virt_type": ', "stderr"),
    (RUN + STATE + ("--instance", "team-a"), 0, '"instance": "team-a"', "stderr"),
    (RUN + STATE + ("--log-level", "debug"), 0, '"event": "reconciled"', "stderr"),
    (RUN + STATE + ("--log-level", "error"), 0, "", "quiet"),
    (RUN + STATE + ("--workers", "1"), 0, "web", "running"),
    (RUN + STATE + ("--start-concurrency", "1"), 0, "web", "running"),
    (RUN + STATE + ("--build-jobs", "1"), 0, "web", "running"),
    (RUN + STATE + ("--resync-interval", "0.5"), 0, '"event": "resync_queued"', "stderr"),
    (RUN + STATE + ("--no-watch",), 0, "web", "running"),
    (RUN + STATE + ("--no-trust-checks",), 0, "web", "running"),
    (RUN + STATE + ("--build-command", "false {{path}}"), 1, "image build failed", "nix"),
    (RUN + STATE + ("--build-command", "sh -c 'sleep 30' {{path}}", "--build-timeout", "0.5"), 1,
     "did not finish within 0.5s", "nix"),
    # check, schema, reference
    (("check", "{config}"), 0, "OK (1 files, 1 domains, 0 networks)", "stdout"),
    (("check", "{config}", "--no-trust-checks"), 0, "OK (1 files", "stdout"),
    (("schema",), 0, '"title": "nvirtd configuration file"', "stdout"),
    (("reference",), 0, "cpu.amount", "stdout"),
    # plan
    (("plan", "--connect", "test:///default", "--config-dir", "{config}", "--state-dir", "{state}"), 2,
     "domain web: define, set-autostart(true), start", "stdout"),
    (("plan", "-c", "test:///default", "--config-dir", "{config}", "--virt-type", "qemu", "--instance", "x",
      "--images-dir", "{images}", "--state-dir", "{state}", "--no-trust-checks", "--log-level", "error"), 2,
     "domain web: define", "stdout"),
    # status and reload read the state dir
    (("status", "--state-dir", "{state}"), 0, "nvirtd: 1 domain: 1 running", "stdout"),
    (("status", "--state-dir", "{state}", "--json"), 0, '"name": "web"', "stdout"),
    (("status", "--instance", "nothing-here", "--state-dir", "{state}"), 0, "nvirtd: 1 domain", "stdout"),
    (("reload", "--state-dir", "{state}", "--timeout", "1"), 1, "nvirtd is not running", "stderr"),
    (("reload", "--instance", "x", "--state-dir", "{state}/none"), 1, "no status in", "stderr"),
    # purge
    (("purge", "web", "--connect", "test:///default", "--config-dir", "{config}", "--state-dir", "{state}"), 1,
     "refusing to purge web: declared in a.json", "stderr"),
    (("purge", "gone", "--yes", "-c", "test:///default", "--config-dir", "{config}", "--state-dir", "{state}",
      "--images-dir", "{images}", "--instance", "x", "--log-level", "error"), 0, "nothing recorded for gone", "stdout"),
    (RUN + STATE + ("--metrics", "unix:{state}/metrics.sock"), 0, '"event": "metrics_serving"', "stderr"),
    (RUN + STATE + ("--metrics", "192.0.2.1:9477"), 1,  # TEST-NET-1: not an address of this host
     "nvirtd: cannot serve metrics on 192.0.2.1:9477: Cannot assign requested address", "stderr"),
    (("status", "--state-dir", "{state}", "--no-addresses"), 0, "nvirtd: 1 domain: 1 running", "stdout"),
    (RUN + STATE + ("--image-retention", "12h"), 0, "web", "running"),
    (RUN + STATE + ("--image-retention", "never"), 0, "web", "running"),
    # day-2 data: gc, snapshot, backup, restore (on the test driver: its domain 'test' is not nvirtd's)
    (("gc", "--state-dir", "{state}", "--images-dir", "{images}", "--dry-run"), 0, "no GC roots in", "stdout"),
    (("gc", "--state-dir", "{state}", "--images-dir", "{images}", "--older-than", "0", "--json"), 0, "[]", "stdout"),
    (("snapshot", "test", "-c", "test:///default", "--list"), 1, "test is not nvirtd's", "stderr"),
    (("snapshot", "nope", "-c", "test:///default", "--name", "x"), 1, "has no domain named nope", "stderr"),
    (("snapshot", "test", "-c", "test:///default", "--name", ".."), 1, "'..' is not a valid name", "stderr"),
    (("backup", "test", "-c", "test:///default", "--to", "{state}/b"), 1, "test is not nvirtd's", "stderr"),
    (("restore", "test", "-c", "test:///default", "--from", "{state}"), 1, "is not a backup nvirtd can read",
     "stderr"),
    # wrong values: the parser names the flag
    (RUN + ("--image-retention", "soon"), 2, "--image-retention: 'soon' is not a duration", "stderr"),
    (("gc", "--older-than=-1d"), 2, "--older-than: '-1d' is not a duration", "stderr"),
    (("restore", "web"), 2, "the following arguments are required: --from", "stderr"),
    (RUN + ("--workers", "0"), 2, "--workers: 0 is less than 1", "stderr"),
    (RUN + ("--metrics", "9477"), 2, "--metrics: '9477' is neither unix:/ABSOLUTE/PATH nor HOST:PORT", "stderr"),
    (RUN + ("--metrics", "unix:rel.sock"), 2, "a unix socket is unix:/ABSOLUTE/PATH", "stderr"),
    (RUN + ("--virt-type", "xen"), 2, "--virt-type: invalid choice: 'xen'", "stderr"),
    (RUN + ("--instance", "a b"), 2, "--instance: 'a b' is not a valid instance name", "stderr"),
    (RUN + ("--resync-interval", "-1"), 2, "--resync-interval: -1 is not a positive number", "stderr"),
    (RUN + ("--log-level", "loud"), 2, "--log-level: invalid choice", "stderr"),
    (("reload", "--timeout", "0"), 2, "--timeout: 0 is not a positive number", "stderr"),
]


@pytest.mark.parametrize("args,code,needle,where", ROWS, ids=[" ".join(r[0])[:60] for r in ROWS])
def test_flag(env, args, code, needle, where):
    if where == "nix":
        write_json(Path(env["config"]) / "a.json", {"domains": {"web": domain(disks=NIX_DISK)}})
    result = run_cli(env, *args)
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    if where == "running":
        assert any(line.startswith(needle) and " running " in line for line in result.stdout.splitlines()), result.stdout
    elif where == "quiet":
        assert result.stderr == ""
    elif where == "nix":
        assert needle in result.stdout
    else:
        assert needle in getattr(result, where), getattr(result, where)[-2000:]
