"""`profiler workers` against real processes: the lab's gunicorn and our own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from profiler.capture.processes import stop_pid
from profiler.lab.lifecycle import LabOptions, down, up, worker_pids
from profiler.lab.settings import api_token
from profiler.lab.state import LabState
from profiler.pg.embedded import free_port


@pytest.fixture(scope="module")
def lab(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    state_dir = str(tmp_path_factory.mktemp("lab-state"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PROFILER_STATE_DIR", state_dir)
        state = up(LabOptions(workers=2, port=free_port(), dsn=postgres_dsn))
    try:
        yield state
    finally:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PROFILER_STATE_DIR", state_dir)
            down()


def _workers(run_cli, *args: str) -> list[dict]:
    result = run_cli("workers", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_gunicorn_master_means_exactly_its_workers(run_cli, lab: LabState) -> None:
    # GIVEN the lab's master and the workers it forked
    assert lab.master is not None
    master = lab.master.pid
    # WHEN
    found = _workers(run_cli, "--pid", str(master))
    # THEN the master and exactly its workers, with the facts attaching needs
    assert {w["pid"]: w["role"] for w in found} == {
        master: "master",
        **{pid: "worker" for pid in worker_pids(master)},
    }
    version = ".".join(map(str, sys.version_info[:3]))
    for worker in found:
        assert worker["server"] == "gunicorn"
        assert worker["python_version"] == version
        assert worker["memray_importable"] is True  # asked of the lab's own venv interpreter
        assert worker["ns_pid"] == worker["pid"] and worker["container"] is None
        assert worker["rss_bytes"] > 10 * 2**20
        assert {
            "pid",
            "ppid",
            "role",
            "cmdline",
            "python_version",
            "rss_bytes",
            "cpu_percent",
            "container",
            "ns_pid",
            "memray_importable",
        } <= worker.keys()


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_count_their_postgres_connections(run_cli, lab: LabState) -> None:
    # GIVEN requests served, so each worker's pool holds connections
    with httpx.Client(base_url=lab.url, timeout=30) as client:
        for index in range(6):
            response = client.get("/tools", headers={"Authorization": f"Bearer {api_token(index)}"})
            assert response.status_code == 200
    # WHEN
    assert lab.master is not None
    found = _workers(run_cli, "--pid", str(lab.master.pid))
    # THEN the workers hold the connections (the lab's PostgreSQL is not on 5432 in CI)
    assert sum(w["pg_connections"] for w in found if w["role"] == "worker") >= 1
    assert next(w for w in found if w["role"] == "master")["pg_connections"] == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_auto_detection_finds_the_lab(run_cli, lab: LabState) -> None:
    assert lab.master is not None
    found = {w["pid"]: w["role"] for w in _workers(run_cli)}
    assert found.get(lab.master.pid) == "master"
    assert all(found.get(pid) == "worker" for pid in worker_pids(lab.master.pid))


@pytest.mark.slow
def test_match_selects_python_processes_by_command_line(run_cli, python_process) -> None:
    # GIVEN a Python process with a distinctive command line
    marker = "profiler_match_marker_7f3a"
    child = python_process(f"import time\n# {marker}\nprint('ready', flush=True)\ntime.sleep(60)\n")
    # WHEN
    found = _workers(run_cli, "--match", marker)
    # THEN only it, as a plain process
    assert [(w["pid"], w["role"]) for w in found] == [(child.pid, "process")]


def test_a_pid_that_does_not_exist_is_exit_3(run_cli) -> None:
    result = run_cli("workers", "--pid", "4194303")
    assert result.exit_code == 3, result.output
    assert "no process with PID 4194303" in result.stderr


def test_a_process_that_is_not_python_is_exit_3(run_cli) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        result = run_cli("workers", "--pid", str(sleeper.pid))
    finally:
        stop_pid(sleeper.pid)
        sleeper.wait()
    assert result.exit_code == 3, result.output
    assert f"PID {sleeper.pid} is not a Python process (sleep)" in result.stderr


def test_a_bad_regex_is_a_usage_error(run_cli) -> None:
    result = run_cli("workers", "--match", "([unclosed")
    assert result.exit_code == 2, result.output
    assert "--match is not a valid regular expression" in result.stderr


def _in_stacks(stacks: dict[str, int], function: str) -> int:
    from profiler.analysis import collapsed

    return collapsed.inclusive(stacks, function)


@pytest.mark.slow
@pytest.mark.postgres
def test_cpu_record_and_dump_of_the_master_cover_each_gunicorn_worker(
    run_cli, lab: LabState, tmp_path
) -> None:
    """Known functions of the lab's own stack, attributed to each worker PID (never the master)."""
    from profiler.analysis import collapsed
    from profiler.lab.load import run_load

    assert lab.master is not None
    workers = worker_pids(lab.master.pid)
    # GIVEN the lab serving a light load while every worker is recorded (idle threads included)
    loader = threading.Thread(target=run_load, args=(lab.url,), kwargs={"users": 4, "seconds": 4})
    loader.start()
    try:
        recorded = run_cli(
            "cpu",
            "record",
            "--pid",
            str(lab.master.pid),
            "-d",
            "3",
            "--idle",
            "--rate",
            "20",
            "--nonblocking",
            "-o",
            str(tmp_path),
            "--json",
        )
        dumped = run_cli("cpu", "dump", "--pid", str(lab.master.pid), "--json")
    finally:
        loader.join()
    # THEN one flamegraph per worker, each with the worker's gunicorn and uvicorn frames
    assert recorded.exit_code == 0, recorded.output
    manifest = json.loads(recorded.stdout)
    assert sorted(w["pid"] for w in manifest["workers"]) == workers
    for worker in manifest["workers"]:
        stacks = collapsed.read(Path(worker["artifacts"]["collapsed"]))
        assert _in_stacks(stacks, "init_process") > 0, worker["pid"]  # gunicorn's worker loop
        assert ".init_process (" in Path(worker["artifacts"]["flamegraph"]).read_text()
    merged = collapsed.read(Path(manifest["merged"]["artifacts"]["collapsed"]))
    assert collapsed.total(merged) == sum(w["flamegraph_samples"] for w in manifest["workers"])
    for worker in manifest["workers"]:  # py-spy's count is what the flamegraph holds, give or take
        assert abs(worker["flamegraph_samples"] - worker["samples"]) <= 0.05 * worker["samples"]
    assert _in_stacks(merged, "init_process") >= len(workers)
    # AND the dump shows every worker's threads, the master's none
    assert dumped.exit_code == 0, dumped.output
    data = json.loads(dumped.stdout)
    assert sorted(w["pid"] for w in data["workers"]) == workers
    for worker in data["workers"]:
        names = {f["name"] for thread in worker["threads"] for f in thread["frames"]}
        assert any(name.endswith(".init_process") for name in names), worker["pid"]


@pytest.mark.slow
@pytest.mark.postgres
def test_mem_attach_captures_every_gunicorn_worker_together(
    run_cli, lab: LabState, tmp_path
) -> None:
    from memray import FileReader

    from profiler.memory.attach import still_tracking

    assert lab.master is not None
    workers = worker_pids(lab.master.pid)
    # WHEN memray is attached to the master's workers for 2 s
    result = run_cli(
        "mem", "attach", "--pid", str(lab.master.pid), "-d", "2", "-o", str(tmp_path), "--json"
    )
    # THEN one capture per worker, from that worker, tracking everywhere within 5 s
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert sorted(w["pid"] for w in manifest["workers"]) == workers
    assert manifest["all_tracking_after_seconds"] < 5
    for worker in manifest["workers"]:
        assert worker["status"] == "done", worker
        assert FileReader(worker["capture"]).metadata.pid == worker["pid"]
        assert not still_tracking(worker["pid"])
    # AND the lab still serves
    with httpx.Client(base_url=lab.url, timeout=30) as client:
        response = client.get("/tools", headers={"Authorization": f"Bearer {api_token(0)}"})
    assert response.status_code == 200


# -- the table keeps PIDs whole --------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
# A worker-like target with a command line longer than the table's command column.
LONG_MARKER = "profiler_whole_pid_marker_" + "x" * 60


def _whole(pid: int, text: str) -> bool:
    """``pid`` appears as a number of its own, not cut (``146…``) nor folded over two lines."""
    return re.search(rf"(?<![\d…]){pid}(?![\d…])", text) is not None


@pytest.mark.slow
@pytest.mark.parametrize("columns", ["80", None])
def test_piped_table_shows_whole_pids(run_cli, python_process, columns: str | None) -> None:
    # GIVEN a real Python process, listed through a pipe (as `profiler workers | cat`)
    child = python_process(
        f"import time\n# {LONG_MARKER}\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    env = {"COLUMNS": columns} if columns else {}
    # WHEN the table is printed (COLUMNS=80 set, or not set at all)
    result = run_cli("workers", "--match", LONG_MARKER, env=env)
    # THEN the PID and the ns PID are whole, the row is one line, laid out for no terminal
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if line.startswith(str(child.pid))]
    assert row.split()[0] == str(child.pid) and _whole(child.pid, row), result.output
    assert row.split().count(str(child.pid)) == 2, result.output  # pid and ns pid
    assert len(row) > 80, result.output  # one line, not fitted to 80 columns


@pytest.mark.slow
def test_table_in_an_80_column_terminal_keeps_pids_whole(python_process) -> None:
    from tests.helpers import run_in_terminal

    # GIVEN a real Python process and a terminal 80 columns wide (COLUMNS=80 too)
    child = python_process(
        f"import time\n# {LONG_MARKER}\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    env = {**os.environ, "COLUMNS": "80"}
    # WHEN `profiler workers` prints its table there
    code, output = run_in_terminal(
        [sys.executable, "-m", "profiler", "workers", "--match", LONG_MARKER],
        columns=80,
        env=env,
        cwd=str(ROOT),
    )
    # THEN the table fits the terminal, the command folds, and both PIDs are whole
    assert code == 0, output
    lines = output.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, output
    (row,) = [line for line in lines if line.startswith(str(child.pid))]
    assert row.split()[0] == str(child.pid) and _whole(child.pid, row), output
    assert row.split().count(str(child.pid)) == 2, output  # pid and ns pid, both whole
    assert "…" not in row.split()[:10], output
