"""`profiler cpu dump` on real Python processes: the right functions, the right PIDs."""

from __future__ import annotations

import json
import subprocess

import pytest

from profiler.capture.processes import stop_pid

TARGET = """
import threading, time

def cpu_dump_marker_waiting():
    while True:
        time.sleep(0.05)

print('ready', flush=True)
cpu_dump_marker_waiting()
"""


@pytest.fixture
def two_targets(python_process) -> list[int]:
    return [python_process(TARGET).pid for _ in range(2)]


@pytest.mark.slow
def test_identical_stacks_of_two_workers_are_counted_once(run_cli, two_targets) -> None:
    # WHEN both processes are dumped
    args = [a for pid in two_targets for a in ("--pid", str(pid))]
    result = run_cli("cpu", "dump", *args, "--json")
    # THEN one folded stack, counted twice, attributed to both PIDs
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(w["pid"] for w in data["workers"]) == sorted(two_targets)
    marked = [f for f in data["folded"] if "cpu_dump_marker_waiting" in f["stack"]]
    assert len(marked) == 1
    assert marked[0]["count"] == 2 and marked[0]["pids"] == sorted(two_targets)
    thread = data["workers"][0]["threads"][0]
    assert thread["frames"][0]["name"] == "sleep" or thread["frames"][-1]["name"] == "<module>"
    assert {"thread_id", "thread_name", "active", "owns_gil", "taken_at", "frames"} <= thread.keys()


@pytest.mark.slow
def test_text_output_names_the_workers_and_the_function(run_cli, two_targets) -> None:
    result = run_cli("cpu", "dump", "--pid", str(two_targets[0]), "--pid", str(two_targets[1]))
    assert result.exit_code == 0, result.output
    pids = ", ".join(map(str, sorted(two_targets)))
    assert f"2 threads in worker {pids}:" in result.stdout
    assert "cpu_dump_marker_waiting" in result.stdout


def test_dump_of_a_missing_pid_is_exit_3(run_cli) -> None:
    result = run_cli("cpu", "dump", "--pid", "4194303")
    assert result.exit_code == 3, result.output
    assert "no process with PID 4194303" in result.stderr


def test_dump_of_a_non_python_process_is_exit_3(run_cli) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        result = run_cli("cpu", "dump", "--pid", str(sleeper.pid))
    finally:
        stop_pid(sleeper.pid)
        sleeper.wait()
    assert result.exit_code == 3, result.output
    assert "is not a Python process" in result.stderr


@pytest.mark.slow
def test_py_spy_missing_is_exit_5(run_cli, two_targets, tmp_path) -> None:
    # GIVEN py-spy pinned (PROFILER_PYSPY) to a path where there is none
    result = run_cli(
        "cpu",
        "dump",
        "--pid",
        str(two_targets[0]),
        env={"PROFILER_PYSPY": str(tmp_path / "no-py-spy")},
    )
    assert result.exit_code == 5, result.output
    assert "py-spy" in result.stderr
