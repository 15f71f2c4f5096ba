"""The flight recorder under a forced incident storm: ``--max-disk`` holds, oldest go first.

A real worker (a Python process holding a transaction open on the test
PostgreSQL) and a recorder told to fire on any idle transaction, with no
cooldown, a 1 s burst and a budget with room for about one incident beyond
the reserve kept for the next: incidents keep coming, the folder never grows
past the budget, the oldest are deleted, and the ones left read as sessions.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from profiler.watch.retention import MIN_INCIDENT_BYTES, folder_bytes
from tests.helpers import retry
from tests.watch_lab import Recorder, manifest

BUDGET = MIN_INCIDENT_BYTES + 300_000  # the reserve for the next incident, and a little


@pytest.mark.slow
@pytest.mark.postgres
def test_incident_storm_stays_within_max_disk(
    postgres_dsn: str,
    tmp_path: Path,
    python_process: Callable[[str], subprocess.Popen[str]],
) -> None:
    from profiler.session import reader

    # GIVEN a worker that holds a transaction open
    worker = python_process(
        "import psycopg, time\n"
        f"conn = psycopg.connect({postgres_dsn!r})\n"
        "conn.execute('SELECT 1')\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    out = tmp_path / "incidents"
    # WHEN the recorder fires on it as often as it can, for 25 s
    recorder = Recorder.start(
        out,
        "--pid",
        str(worker.pid),
        "--dsn",
        postgres_dsn,
        "--idle-threshold",
        "0",
        "--cooldown",
        "0",
        "--burst",
        "1",
        "--pg-interval",
        "0.2",
        "--stack-interval",
        "0.5",
        "--ring",
        "30",
        "--no-tasks",
        "--max-incidents",
        "1000",
        "--max-disk",
        str(BUDGET),
        "-d",
        "25",
    )
    sizes: list[int] = []
    done = threading.Event()

    def measure() -> None:
        while not done.wait(0.1):
            if out.exists():
                sizes.append(folder_bytes(out))

    measuring = threading.Thread(target=measure)
    measuring.start()
    try:
        code = recorder.process.wait(90)
    finally:
        done.set()
        measuring.join()
        if recorder.process.poll() is None:
            recorder.kill()
    assert code == 0, recorder.stderr()
    import json

    status = json.loads((out / "watch.json").read_text())
    # THEN incidents kept coming and the oldest were deleted to make room
    assert len(status["incidents"]) >= 5, recorder.stderr()
    assert status["deleted"], status
    assert status["deleted"] == sorted(status["deleted"])
    kept = [f.name for f in recorder.incidents()]
    assert kept == sorted(kept) and min(kept) > max(status["deleted"])
    # AND the folder never grew past the budget
    assert sizes and max(sizes) <= BUDGET, (max(sizes), BUDGET)
    # AND what is left reads as sessions
    for folder in recorder.incidents():
        assert manifest(folder)["incident"]["state"] == "complete"
        assert reader.open(folder).snapshots
    retry(lambda: worker.poll() is None, timeout=1, what="the worker still alive")
