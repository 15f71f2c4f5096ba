"""The memory rules on a real worker: RSS growth fires; ``--mem-on`` runs memray in the burst."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from profiler.session import reader
from tests.watch_lab import Recorder, manifest

GROWER = """
import time
print("ready", flush=True)
blobs = []
while True:
    blobs.append(bytearray(2_000_000))  # 20 MB a second
    time.sleep(0.1)
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_rss_growth_incident_with_memray(
    postgres_dsn: str,
    tmp_path: Path,
    python_process: Callable[[str], subprocess.Popen[str]],
) -> None:
    # GIVEN a worker growing 20 MB a second
    worker = python_process(GROWER)
    out = tmp_path / "incidents"
    # WHEN the recorder watches it with a 5 MB/min growth rule and memray on that rule
    recorder = Recorder.start(
        out,
        "--pid",
        str(worker.pid),
        "--dsn",
        postgres_dsn,
        "--rss-growth",
        "5M",
        "--rss-window",
        "4",
        "--mem-on",
        "rss-growth",
        "--no-tasks",
        "--burst",
        "4",
        "-d",
        "20",
    )
    try:
        code = recorder.process.wait(90)
    finally:
        if recorder.process.poll() is None:
            recorder.kill()
    assert code == 0, recorder.stderr()
    # THEN one rss-growth incident, on that worker, with a memray capture of the burst
    (folder,) = recorder.incidents()
    incident = manifest(folder)["incident"]
    assert (incident["rule"], incident["burst_pids"]) == ("rss-growth", [worker.pid])
    mem = manifest(folder)["probes"]["mem"]
    assert mem["status"] == "ok", mem
    assert (folder / f"mem/memray-{worker.pid}.bin").stat().st_size > 0
    # AND the RSS series in the incident shows the growth
    rss = reader.open(folder).rss
    assert rss["rss_bytes"].iloc[-1] > rss["rss_bytes"].iloc[0]
