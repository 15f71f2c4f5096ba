"""Granian and ``uvicorn --workers`` as first-class servers: the lab app on the real servers
from PyPI, found by ``workers`` and profiled by every probe (gunicorn: tests/test_workers.py).

The two start workers unlike gunicorn: uvicorn spawns them through multiprocessing (their
command line names no server, and a resource tracker sits beside them), granian forks them
and drives their asyncio loop from Rust threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from profiler.capture import task_log
from profiler.lab.lifecycle import LabOptions, down, up, worker_pids
from profiler.lab.load import run_load
from profiler.lab.settings import api_token
from profiler.lab.state import LabState
from profiler.pg.embedded import free_port
from tests.helpers import connections_to, retry

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SESSION_USERS = 8  # the load under the task-sampler session
LOAD_USERS = 4  # the load under the CPU capture, and the load asked to stop
POOL_SIZE = 5


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def lab(
    request: pytest.FixtureRequest, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabState]:
    """The lab gateway served by each server in turn: 2 workers, held sessions, a 1.5 s call."""
    state_dir = str(tmp_path_factory.mktemp(f"lab-{request.param}"))
    options = LabOptions(
        server=request.param,
        workers=2,
        port=free_port(),
        dsn=postgres_dsn,
        # Enough connections for the tests' load on one worker: an exhausted pool blocks the
        # event loop in the checkout (the lab's sync Session) for up to its 30 s timeout, and
        # an injection waits for the loop's thread. A held request takes 2 connections, the
        # server may hand every client connection to one worker, and a load cut off leaves
        # its requests running while the next test's begin. At 10 a worker, a worker wedged
        # so long that the next load's first request timed out (CI, 2026-12-04).
        pool_size=POOL_SIZE,
        max_overflow=2 * (SESSION_USERS + LOAD_USERS) - POOL_SIZE,
        # Longer than the 1 s idle-in-transaction threshold, so that every transaction held
        # across the call crosses it, on a fast machine as on a slow one.
        downstream_latency=1.5,
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PROFILER_STATE_DIR", state_dir)
        try:
            state = up(options)
        except BaseException:
            down()
            raise
    try:
        yield state
    finally:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PROFILER_STATE_DIR", state_dir)
            down()


def _master(lab: LabState) -> int:
    assert lab.master is not None
    return lab.master.pid


def _json(run_cli, *args: str) -> object:
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_master_means_exactly_its_workers_with_the_server_named(run_cli, lab: LabState):
    # GIVEN the server's master and the workers it started (helpers such as uvicorn's
    # multiprocessing resource tracker are no workers)
    master = _master(lab)
    workers = worker_pids(master)
    assert len(workers) == 2
    # WHEN
    found = _json(run_cli, "workers", "--pid", str(master))
    # THEN the master and exactly its workers, each named with the server
    assert isinstance(found, list)
    assert {w["pid"]: w["role"] for w in found} == {
        master: "master",
        **{pid: "worker" for pid in workers},
    }
    assert {w["server"] for w in found} == {lab.server}
    assert all(w["memray_importable"] is True for w in found)


def test_a_worker_pid_means_that_worker(run_cli, lab: LabState) -> None:
    worker = worker_pids(_master(lab))[0]
    found = _json(run_cli, "workers", "--pid", str(worker))
    assert isinstance(found, list)
    assert [(w["pid"], w["role"], w["server"]) for w in found] == [(worker, "worker", lab.server)]


def test_auto_detection_finds_the_server(run_cli, lab: LabState) -> None:
    master = _master(lab)
    found = _json(run_cli, "workers")
    assert isinstance(found, list)
    roles = {w["pid"]: (w["role"], w["server"]) for w in found}
    assert roles[master] == ("master", lab.server)
    assert all(roles[pid] == ("worker", lab.server) for pid in worker_pids(master))
    # AND the table puts each worker under its own master
    table = run_cli("workers").stdout.splitlines()
    row = next(i for i, line in enumerate(table) if line.split()[:1] == [str(master)])
    assert f"master ({lab.server})" in table[row], table
    assert all("└ worker" in line for line in table[row + 1 : row + 3]), table
    assert {int(line.split()[0]) for line in table[row + 1 : row + 3]} == set(worker_pids(master))


def test_cpu_dump_and_record_cover_each_worker(run_cli, lab: LabState, tmp_path: Path) -> None:
    from profiler.analysis import collapsed

    master = _master(lab)
    workers = worker_pids(master)
    # GIVEN light load while every worker is recorded (idle threads included)
    loader = threading.Thread(
        target=run_load, args=(lab.url,), kwargs={"users": LOAD_USERS, "seconds": 3}
    )
    loader.start()
    try:
        recorded = _json(
            run_cli,
            "cpu",
            "record",
            "--pid",
            str(master),
            "-d",
            "2",
            "--idle",
            "--rate",
            "20",
            "--nonblocking",
            "-o",
            str(tmp_path),
        )
        dumped = _json(run_cli, "cpu", "dump", "--pid", str(master))
    finally:
        loader.join()
    # THEN one flamegraph per worker (never the master), each showing the event loop
    assert isinstance(recorded, dict) and isinstance(dumped, dict)
    assert sorted(w["pid"] for w in recorded["workers"]) == workers
    for worker in recorded["workers"]:
        stacks = collapsed.read(Path(worker["artifacts"]["collapsed"]))
        assert collapsed.inclusive(stacks, "run_forever") > 0, worker["pid"]
    assert sorted(w["pid"] for w in dumped["workers"]) == workers
    for worker in dumped["workers"]:
        names = {f["name"] for thread in worker["threads"] for f in thread["frames"]}
        assert any(name.endswith("run_forever") for name in names), worker["pid"]


def test_mem_attach_captures_every_worker(run_cli, lab: LabState, tmp_path: Path) -> None:
    from memray import FileReader

    from profiler.memory.attach import still_tracking

    master = _master(lab)
    manifest = _json(run_cli, "mem", "attach", "--pid", str(master), "-d", "2", "-o", str(tmp_path))
    assert isinstance(manifest, dict)
    assert sorted(w["pid"] for w in manifest["workers"]) == worker_pids(master)
    for worker in manifest["workers"]:
        assert worker["status"] == "done", worker
        assert FileReader(worker["capture"]).metadata.pid == worker["pid"]
        assert not still_tracking(worker["pid"])
    with httpx.Client(base_url=lab.url, timeout=30) as client:  # AND the gateway still serves
        response = client.get("/tools", headers={"Authorization": f"Bearer {api_token(0)}"})
    assert response.status_code == 200


def test_a_session_names_the_code_holding_connections_through_the_task_sampler(
    run_cli, lab: LabState, postgres_dsn: str, tmp_path: Path
) -> None:
    master = _master(lab)
    workers = worker_pids(master)
    out = tmp_path / "session"
    # GIVEN the held gateway under load (sessions held across the downstream call)
    # (on until the session ends: the injection before its window takes 1-3 s, more on a busy host)
    done = threading.Event()
    loader = threading.Thread(
        target=run_load,
        args=(lab.url,),
        kwargs={"users": SESSION_USERS, "seconds": 60, "stop": done},
    )
    loader.start()
    try:
        # WHEN a 6 s session runs on the master
        manifest = _json(
            run_cli,
            "session",
            "run",
            "--pid",
            str(master),
            "--dsn",
            postgres_dsn,
            "-d",
            "6",
            "--no-mem",
            "-o",
            str(out),
        )
    finally:
        done.set()
        loader.join()
    # THEN the task sampler ran in every worker and saw the handlers' tasks
    assert isinstance(manifest, dict)
    assert manifest["probes"]["tasks"]["status"] == "ok", manifest["probes"]["tasks"]
    paths = [out / "tasks" / f"tasks-{pid}.jsonl" for pid in workers]
    assert all((task_log.read_end(path) or {}).get("reason") == "stopped" for path in paths)
    frames = {path: task_log.read(path) for path in paths}
    seen = {str(stack) for frame in frames.values() for stack in frame["stack"].unique()}
    assert any("call_tool" in stack for stack in seen), sorted(s[-300:] for s in seen)
    # AND the held connections are the invoke endpoint's, and (not yet under granian: rounds
    # with no request task blame every task, its lifespan task `_main -> Event.wait`
    # included; analysis/sample_pairs.py) its handler's path leads that endpoint's finding
    # (which endpoint ranks first depends on the machine: on a busy one the catalogue
    # listings also hold their sessions while AnyIO's threads are slow to close them)
    shown = _json(run_cli, "session", "show", str(out))
    assert isinstance(shown, dict)
    held = [f for f in shown["findings"] if f["rule"] == "held-code-path"]
    assert held, shown["findings"]
    endpoints = {e["endpoint"] for f in held for e in f["evidence"].get("endpoints", [])}
    assert "POST /tools/{tool_id}/invoke (invoke_tool)" in endpoints, held
    assert all("future_watcher" not in f["title"] for f in held), held
    invoke = [
        e
        for f in held
        for e in f["evidence"]["endpoints"]
        if e["endpoint"] == "POST /tools/{tool_id}/invoke (invoke_tool)"
    ]
    if lab.server != "granian":
        assert all(
            e["paths"][0]["names"] == "invoke_tool → call_tool → AsyncClient.post" for e in invoke
        ), invoke


def test_load_ends_when_asked_before_its_bound(lab: LabState) -> None:
    # GIVEN load bounded at a minute, asked to stop once its users are connected and have had a
    # second of requests (connected: waited for, the catalogue fetch before them can be slow)
    port = urlsplit(lab.url).port
    done = threading.Event()

    def stop_once_loaded() -> None:
        retry(
            lambda: len(connections_to(port, psutil.CONN_ESTABLISHED)) >= 2,
            timeout=30,
            what="the users' connections",
        )
        time.sleep(1.0)
        done.set()

    stopper = threading.Thread(target=stop_once_loaded, daemon=True)
    stopper.start()
    try:
        # WHEN it runs
        result = run_load(lab.url, users=LOAD_USERS, seconds=60, stop=done)
    finally:
        done.set()
        stopper.join()
    # THEN it served requests and ended at the stop, not at its bound
    assert result.requests > 0, result
    assert result.seconds < 30, result
