"""Bad input, from outside: the corpus in tests/data/bad-input, against `nvirtd check`
and against a running daemon that manages three good VMs.

Each corpus file has its expected error (file, field, reason) in expected.txt. The
daemon must report every one of them, keep running, and make no libvirt call for
the good VMs. Also here: what one file may cost (size and error caps), entries that
are not regular files, and rules spanning files (a MAC in two files holds the file
that brought it, it is not applied anyway).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import libvirt

from daemon.configfiles import MAX_FILE_BYTES
from daemon.core.config import MAX_ERRORS_PER_FILE
from tests.conftest import REPO, domain, write_json

CORPUS = REPO / "tests" / "data" / "bad-input"


def expected_errors() -> dict[str, str]:
    lines = (CORPUS / "expected.txt").read_text().splitlines()
    return {line.split(": ", 1)[0]: line for line in lines}


def copy_corpus(into: Path) -> None:
    for path in CORPUS.glob("*.json"):
        shutil.copyfile(path, into / path.name)
        (into / path.name).chmod(0o644)


def nvirtd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=60)


def test_every_corpus_file_has_its_expected_error():
    assert set(expected_errors()) == {p.name for p in CORPUS.glob("*.json")}


def test_check_reports_every_bad_file_with_file_field_and_reason(dirs):
    copy_corpus(dirs["config"])
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    reported = set(result.stderr.splitlines())
    missing = {name: line for name, line in expected_errors().items() if line not in reported}
    assert missing == {}


async def test_running_daemon_reports_the_corpus_and_leaves_good_vms_alone(dirs, settings, start_daemon, fresh_libvirt):
    write_json(dirs["config"] / "good.json", {"domains": {n: domain() for n in ("g1", "g2", "g3")}})
    d = await start_daemon(settings)
    events: list[tuple[str, int]] = []
    cb = fresh_libvirt.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                              lambda _c, dom, ev, _d, _o: events.append((dom.name(), ev)), None)
    try:
        before = d.hv.mutation_count
        copy_corpus(dirs["config"])
        await d.reload()
        await asyncio.sleep(0.2)  # any event the reload caused has arrived
        assert not d.task.done(), "the daemon died on bad input"
        reported = set(d.daemon.status.config_errors)
        missing = {name: line for name, line in expected_errors().items() if line not in reported}
        assert missing == {}
        assert d.hv.mutation_count == before and events == []
        assert all(fresh_libvirt.lookupByName(n).state()[0] == libvirt.VIR_DOMAIN_RUNNING for n in ("g1", "g2", "g3"))
        # and it keeps working: a good change after all that is applied
        write_json(dirs["config"] / "more.json", {"domains": {"g4": domain()}})
        await d.reload()
        assert fresh_libvirt.lookupByName("g4").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        fresh_libvirt.domainEventDeregisterAny(cb)


def test_a_file_with_thousands_of_errors_costs_a_bounded_report(dirs):
    write_json(dirs["config"] / "many.json", {"domains": {f"d{i}": {"memory": {"amount": "x"}} for i in range(5000)}})
    started = time.monotonic()
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == MAX_ERRORS_PER_FILE + 1
    assert f"only the first {MAX_ERRORS_PER_FILE} errors are shown" in lines[-1] and "5000 domains" in lines[-1]
    assert time.monotonic() - started < 10


def test_a_file_larger_than_the_limit_is_not_read(dirs):
    big = dirs["config"] / "huge.json"
    big.write_text('{"domains": {}, "x": "' + "a" * MAX_FILE_BYTES + '"}')
    big.chmod(0o644)
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 1 and "huge.json: the file is 8.0 MiB, more than the 8 MiB" in result.stderr


def test_entries_that_are_not_regular_files_are_reported_as_skipped(dirs):
    write_json(dirs["config"] / "a.json", {"domains": {"web": domain()}})
    (dirs["config"] / "sub.json").mkdir()
    os.mkfifo(dirs["config"] / "pipe.json")  # opening it would block: it must not be opened
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 0, result.stderr
    assert "warning: sub.json: skipped: a directory, not a regular file" in result.stderr
    assert "warning: pipe.json: skipped: a FIFO, not a regular file" in result.stderr
    assert "OK (1 files, 2 skipped, 1 domains" in result.stdout


def test_a_mac_clash_across_files_holds_the_file_that_brought_it(dirs):
    nic = {"interfaces": {"lan": {"network": "default", "mac": "52:54:00:aa:bb:01"}}}
    write_json(dirs["config"] / "m1.json", {"domains": {"vm1": domain(**nic)}})
    write_json(dirs["config"] / "m2.json", {"domains": {"vm2": domain(**nic)}})
    result = nvirtd("check", str(dirs["config"]))
    assert result.returncode == 1
    assert ("m2.json: domains.vm2.interfaces.lan.mac: MAC 52:54:00:aa:bb:01 is also used by m1.json: "
            "domains.vm1.interfaces.lan.mac") in result.stderr


async def test_a_mac_clash_is_not_applied_and_the_older_file_goes_on(dirs, settings, start_daemon, fresh_libvirt):
    nic = {"interfaces": {"lan": {"network": "default", "mac": "52:54:00:aa:bb:01"}}}
    write_json(dirs["config"] / "z1.json", {"domains": {"vm1": domain(**nic)}})
    d = await start_daemon(settings)
    assert fresh_libvirt.lookupByName("vm1").isActive() == 1
    # a new file, sorted before the old one, takes the same MAC: the new one is held
    write_json(dirs["config"] / "a0.json", {"domains": {"vm0": domain(**nic), "other": domain()}})
    await d.reload()
    names = {dom.name() for dom in fresh_libvirt.listAllDomains()}
    assert "vm0" not in names and "other" not in names, "a file with an error keeps its last good state"
    assert fresh_libvirt.lookupByName("vm1").isActive() == 1
    assert any(e.startswith("a0.json: domains.vm0.interfaces.lan.mac: MAC 52:54:00:aa:bb:01 is also used by "
                            "z1.json") for e in d.daemon.status.config_errors)
    # fixing it applies it
    write_json(dirs["config"] / "a0.json", {"domains": {"vm0": domain(), "other": domain()}})
    await d.reload()
    assert {"vm0", "other"} <= {dom.name() for dom in fresh_libvirt.listAllDomains()}
    assert d.daemon.status.config_errors == []


async def test_a_name_moved_into_a_broken_file_is_not_removed(dirs, settings, start_daemon, fresh_libvirt):
    """Moving a VM from one file to another, with the new file saved broken first: the VM
    is held (found by the simulator: it used to be shut down and undefined)."""
    write_json(dirs["config"] / "b.json", {"domains": {"mover": domain()}})
    d = await start_daemon(settings)
    (dirs["config"] / "a.json").write_text('{"domains": {"mover": ')
    write_json(dirs["config"] / "b.json", {"domains": {}})
    await d.reload()
    assert fresh_libvirt.lookupByName("mover").isActive() == 1
    assert d.hv.mutations["shutdown"] == d.hv.mutations["undefine"] == 0
    write_json(dirs["config"] / "a.json", {"domains": {"mover": domain()}})
    await d.reload()
    assert fresh_libvirt.lookupByName("mover").isActive() == 1 and d.hv.mutations["shutdown"] == 0
