"""Logs as journal fields: the native protocol byte for byte, and a real journald.

systemd is not PID 1 here, but journald runs on its own in a namespace of its own
(`systemd-journald NAMESPACE`, socket /run/systemd/journal.NAMESPACE/socket), and
`journalctl --namespace` reads what it stored: the end-to-end test uses that.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import structlog

from daemon import logs
from daemon.runtime import journal

JOURNALD = "/lib/systemd/systemd-journald"


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    structlog.reset_defaults()


def test_native_protocol_byte_for_byte():
    fields = {"MESSAGE": "reconciled domain=web", "DOMAIN": "web", "STDERR_TAIL": "line 1\nline 2"}
    assert journal.encode(fields) == (
        b"MESSAGE=reconciled domain=web\n"
        b"DOMAIN=web\n"
        b"STDERR_TAIL\n" + struct.pack("<Q", 13) + b"line 1\nline 2\n")


def test_every_key_becomes_a_field_with_the_level_as_priority():
    fields = journal.entry({"event": "reconcile_failed", "domain": "web", "actions": ["start"], "retry-in": 1.0,
                            "_private": "x", "level": "error", "timestamp": "2026-11-27T00:00:00Z"})
    assert fields["PRIORITY"] == "3" and fields["SYSLOG_IDENTIFIER"] == "nvirtd"
    assert fields["DOMAIN"] == "web" and fields["ACTIONS"] == '["start"]' and fields["RETRY_IN"] == "1.0"
    assert fields["PRIVATE"] == "x" and "TIMESTAMP" not in fields
    assert fields["MESSAGE"].startswith("reconcile_failed domain=web")


def test_the_journal_is_used_only_when_stderr_is_the_journal_stream(tmp_path):
    sock = tmp_path / "socket"
    sock.touch()
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        mine = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal.socket_for(stream, mine, str(sock)) == str(sock)
        # inherited from a parent whose stderr was the journal, but ours is a pipe or a file now
        assert journal.socket_for(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, str(sock)) is None
        assert journal.socket_for(stream, {}, str(sock)) is None
        assert journal.socket_for(stream, mine, str(tmp_path / "no-journald")) is None


def test_a_line_journald_cannot_take_goes_to_stderr(tmp_path):
    with open(tmp_path / "stderr", "w+") as stream:
        logs.configure("info", stream=stream, journal_socket=str(tmp_path / "gone"))
        structlog.get_logger().warning("image_build_failed", domain="web")
        stream.seek(0)
        line = json.loads(stream.read())
    assert line["event"] == "image_build_failed" and line["domain"] == "web"


@pytest.fixture
def journald():
    if not os.path.exists(JOURNALD) or shutil.which("journalctl") is None:
        pytest.skip("systemd-journald is not installed")
    namespace = f"nvt{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([JOURNALD, namespace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket_path = Path(f"/run/systemd/journal.{namespace}/socket")
    try:
        deadline = time.monotonic() + 5
        while not socket_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("systemd-journald does not run here")
            time.sleep(0.05)
        yield namespace, str(socket_path)
    finally:
        proc.terminate()
        proc.wait(5)
        machine = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
        for leftover in (socket_path.parent, Path(f"/run/log/journal/{machine}.{namespace}"),
                         Path(f"/var/log/journal/{machine}.{namespace}")):
            shutil.rmtree(leftover, ignore_errors=True)


def entries(namespace: str, *match: str) -> list[dict]:
    out = subprocess.run(["journalctl", f"--namespace={namespace}", "-o", "json", "--no-pager", *match],
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("background", [False, True], ids=["written-at-once", "by-the-writer-thread"])
def test_journalctl_finds_one_vms_lines_and_only_the_problems(journald, background):
    namespace, socket_path = journald
    logs.configure("debug", journal_socket=socket_path, background=background)
    log = structlog.get_logger("nvirtd.test")
    log.info("reconciled", domain="web", phase="running", actions=["define", "start"], ms=4.2)
    log.info("reconciled", domain="db", phase="running", actions=[], ms=1.0)
    log.error("reconcile_failed", domain="db", error="qemu-img exited with status 1:\ncould not open")
    deadline = time.monotonic() + 10
    while len(entries(namespace, "SYSLOG_IDENTIFIER=nvirtd")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)

    web = entries(namespace, "DOMAIN=web")
    assert [e["MESSAGE"] for e in web] == ['reconciled domain=web phase=running actions=["define", "start"] ms=4.2']
    assert web[0]["PRIORITY"] == "6" and web[0]["ACTIONS"] == '["define", "start"]'
    problems = entries(namespace, "-p", "warning")
    assert [(e["DOMAIN"], e["EVENT"]) for e in problems] == [("db", "reconcile_failed")]
    assert problems[0]["ERROR"] == "qemu-img exited with status 1:\ncould not open"
