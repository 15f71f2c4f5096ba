"""The memory cause on hand-built samples: an OOM kill joined with memray's peak, the RSS
timeline and the held sessions (:mod:`profiler.analysis.memory_cause`)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from profiler.analysis.diagnosis import diagnose
from profiler.analysis.memory_cause import WorkerPeak, memory_share
from profiler.session.memory_peaks import read_peaks
from tests.test_diagnosis import HELD, IDLE, finding, given, per_episode, task_rows

MIB = 1 << 20
SERVERS = "endpoint GET /servers (list_servers)"
RUN = "run (uvicorn/server.py:68);app (fastapi/routing.py:528)"
BUILD = f"{RUN};list_servers (app/catalogue.py:40);with_manifest (app/catalogue.py:61)"
ENCODE = f"{RUN};list_servers (app/catalogue.py:44);dumps (json/__init__.py:231)"
IMPORTS = "import_module (importlib/__init__.py:90);<module> (sqlalchemy/orm/__init__.py:1)"
HOLDING = (
    f"{SERVERS};{RUN};list_servers (app/catalogue.py:42);fetch (app/catalogue.py:55);"
    "AsyncClient.post (httpx/_client.py:1859)"
)
OOM = finding(
    "worker-vanished",
    worker_pid=101,
    exit="oom-killed",
    seconds_into_session=8.1,
    memory_limit_bytes=256 * MIB,
    last_rss_bytes=300 * MIB,
    oom_evidence=(
        "kernel: Memory cgroup out of memory: Killed process 101 (python) total-vm:995588kB, "
        "anon-rss:317440kB, file-rss:24304kB; cgroup memory.oom_control oom_kill 0 -> 1 (/x)"
    ),
)
PEAK = WorkerPeak(
    101,
    peak_bytes=200 * MIB,
    tracked_bytes=200 * MIB,
    closed=False,
    stacks=((BUILD, 100 * MIB), (ENCODE, 40 * MIB), (IMPORTS, 60 * MIB)),
)


def rss(pid: int, *values_mib: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "taken_at": pd.to_datetime(
                [datetime.fromtimestamp(100.0 + i, timezone.utc) for i in range(len(values_mib))]
            ),
            "worker_pid": [pid] * len(values_mib),
            "rss_bytes": [int(v * MIB) for v in values_mib],
        }
    )


def holding_tasks(rounds: int = 5) -> pd.DataFrame:
    """GET /servers requests holding 8001, opened by the get_db dependency; one more round
    that holds nothing."""
    opener = ((8001, "get_db", "app/deps.py", 46, "dependency"),)
    rows = [
        {"at": float(i), "endpoint": SERVERS, "stack": HOLDING, "backends": (8001,)}
        | {"openers": opener, "request": 7}
        for i in range(rounds)
    ]
    rows.append({"at": float(rounds), "endpoint": SERVERS, "stack": HOLDING, "request": 7})
    return task_rows(*rows)


def test_an_oom_kill_is_the_first_cause_naming_the_endpoint_sites_and_holder() -> None:
    # GIVEN a worker OOM-killed, its RSS climbing, memray's peak mostly under GET /servers,
    # whose requests held get_db's session; and a hold across a downstream call as well
    found = diagnose(
        given(
            findings=[OOM, HELD, IDLE],
            per_episode=per_episode((HOLDING, 6.0)),
            tasks=holding_tasks(),
            memory_peaks=[PEAK],
            rss=rss(101, 80, 120, 200, 300, 0),
        )
    )
    # THEN the OOM kill comes first, with the endpoint's share of the growth
    first = found[0]
    assert first.cause == "oom-kill"
    assert first.title == (
        "worker 101 killed by the OOM killer at its 256 MiB limit: 70% of the growth "
        "allocated under GET /servers while it held sessions"
    )
    # AND the mechanism: the kill and its witness, the RSS climb, memray, the held sessions
    assert first.mechanism == [
        "worker 101 was killed by the OOM killer 8.1 s into the session, its cgroup at its "
        "256 MiB memory limit (last RSS seen 300 MiB); the kernel log names it "
        "(anon-rss 310 MiB)",
        "RSS 80.0 MiB → 300 MiB over 3 s (+73.3 MiB/s)",
        "memray: 70% of the 200 MiB live at the worker's peak (its capture read up to the "
        "kill) was allocated under GET /servers (list_servers): with_manifest "
        "(app/catalogue.py:61) 50%, list_servers (app/catalogue.py:44) 20%",
        "GET /servers requests held a database connection in 5 of 6 sampled request rounds "
        "(83%), opened by dependency `get_db`: each response was built while its session was "
        "open, so requests queued on the pool and every one in flight kept its response in "
        "memory",
    ]
    # AND where: the allocation sites in the user's code, then the session's opener
    assert [(w.role, w.function, w.file, w.line) for w in first.where] == [
        ("allocation", "with_manifest", "app/catalogue.py", 61),
        ("allocation", "list_servers", "app/catalogue.py", 44),
        ("dependency", "get_db", "app/deps.py", 46),
    ]
    assert first.fix_link == "how-to/bound-response-memory.md"
    assert (first.severity, first.evidence) == ("critical", ["worker-vanished"])
    # AND the hold is still diagnosed, after it
    assert [cause.cause for cause in found[1:]] == ["session-held-across-await"]


def test_without_memray_the_kill_is_still_the_first_cause_without_an_endpoint() -> None:
    found = diagnose(given(findings=[OOM], tasks=holding_tasks()))
    (cause,) = found
    assert cause.title == "worker 101 killed by the OOM killer at its 256 MiB limit"
    assert cause.where == []


def test_near_the_limit_without_a_kill_is_memory_growth() -> None:
    near = finding("memory-limit", worker_pid=101, memory_limit_bytes=256 * MIB)
    (cause,) = diagnose(given(findings=[near], memory_peaks=[PEAK], tasks=holding_tasks()))
    assert cause.cause == "memory-growth"
    assert cause.title.startswith("worker 101 near its memory limit at its 256 MiB limit: 70%")


def test_a_worker_that_merely_exited_is_no_memory_cause() -> None:
    exited = finding("worker-vanished", "warning", worker_pid=101, exit="exited")
    assert diagnose(given(findings=[exited], memory_peaks=[PEAK])) == []


def test_stacks_outside_any_endpoint_go_under_their_outermost_application_frame() -> None:
    peak = WorkerPeak(1, 10, 10, True, (("main (app/jobs.py:3);load (app/jobs.py:9)", 10),))
    share = memory_share(peak, {})
    assert (share.endpoint, share.sites) == ("main", [("load (app/jobs.py:9)", 10)])


def test_peak_files_are_read_back_and_a_broken_one_is_skipped(tmp_path: Path) -> None:
    # GIVEN one peak file as session run writes it, and one cut short
    document = {
        "format": "profiler-memory-peak",
        "pid": 101,
        "peak_bytes": 5,
        "tracked_bytes": 5,
        "closed": False,
        "stacks": [{"stack": BUILD, "bytes": 5, "allocations": 1}],
    }
    (tmp_path / "peak-101.json").write_text(json.dumps(document))
    (tmp_path / "peak-102.json").write_text('{"pid": 10')
    # WHEN / THEN
    assert read_peaks(tmp_path) == [WorkerPeak(101, 5, 5, False, ((BUILD, 5),))]
