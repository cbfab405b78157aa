"""What `nvirtd status` says of scheduled backups, and when the scheduler finds one due."""

from __future__ import annotations

import json
import os
import time

from daemon.backup_schedule import BackupScheduler, last_backup_at
from daemon.core.domain_xml import RenderContext, render_domain
from daemon.core.spec import Domain, VirtType
from daemon.status import render_table


def test_the_table_shows_a_backup_running_failed_or_done():
    backups = {"web": {"phase": "backing-up", "progress": 42},
               "db": {"phase": "failed", "retry_in": 4.0, "error": "cannot write backups to /x: Permission denied"},
               "ci": {"phase": "done", "last": "/b/ci/20261201T010000Z", "kept": 3, "consistency": "clean",
                      "next_at": 1764550800.0}}
    table = render_table({"summary": "3 domains", "daemon": {"backups": backups}})
    assert "  web                    backing-up 42%" in table
    assert "  db                     failed (retry in 4 s): cannot write backups to /x" in table
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(1764550800.0))
    assert f"  ci                     last /b/ci/20261201T010000Z (3 kept, clean); next {when}" in table


def rendered(name: str, **backup):
    spec = Domain.model_validate({"memory": {"amount": 64, "unit": "MiB"}, "backup": backup})
    return render_domain(name, spec, RenderContext(VirtType.kvm, "/img", "/state"), source_file="a.json")


def test_a_backup_is_due_when_the_newest_whole_one_is_older_than_every(tmp_path):
    to = str(tmp_path)
    for stamp in ("20200101T000000Z", "29990101T000000Z.partial"):  # an old whole one, a partial one
        os.makedirs(f"{to}/web/{stamp}")
    with open(f"{to}/web/20200101T000000Z/manifest.json", "w") as f:
        json.dump({"domain": "web"}, f)
    assert last_backup_at(to, "web") == 1577836800.0  # the .partial is no backup
    domains = {"web": rendered("web", every="daily", to=to), "db": rendered("db", every="hourly", to=to),
               "new": rendered("new", every="daily", to=to)}
    sched = BackupScheduler(uri="test:///default", instance="default", domains=lambda: domains,
                            report=lambda state: None, defined=lambda name: name != "new")
    assert [n for n, _ in sched.due()] == ["db", "web"]  # never backed up, overdue; "new" is not defined yet
    os.makedirs(f"{to}/web/29990101T000000Z")  # a whole one from the future: not due
    with open(f"{to}/web/29990101T000000Z/manifest.json", "w") as f:
        json.dump({"domain": "web"}, f)
    assert [n for n, _ in sched.due()] == ["db"]


def test_a_backup_stuck_in_its_thread_never_holds_the_daemons_exit():
    """A hung libvirtd can keep a backup's libvirt call from returning; stopping must not wait for it."""
    import asyncio
    import functools
    import threading

    from daemon.adapters.hypervisor_threads import in_own_thread

    release = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(in_own_thread(functools.partial(release.wait, 5), timeout=None))
        await asyncio.sleep(0.05)
        task.cancel()  # what stopping the daemon does to its helper tasks

    began = time.monotonic()
    asyncio.run(main())  # with asyncio.to_thread, this waits the 5 s for the executor
    assert time.monotonic() - began < 2
    release.set()
