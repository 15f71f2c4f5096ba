"""`profiler cpu dump` on real Python processes: the right functions, the right PIDs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from profiler.capture import stack_log
from profiler.capture.processes import stop_pid
from profiler.errors import InputError
from tests.helpers import retry

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


# Periodic dumps: the timestamped feed that lines stacks up with pg_stat_activity.


@pytest.mark.slow
def test_interval_dumps_write_a_log_the_reader_loads(run_cli, two_targets, tmp_path) -> None:
    # WHEN both workers are dumped every 0.25 s for 1.5 s
    log_path = tmp_path / "stacks.jsonl"
    args = [a for pid in two_targets for a in ("--pid", str(pid))]
    result = run_cli("cpu", "dump", *args, "--interval", "0.25", "-d", "1.5", "-o", str(log_path))
    assert result.exit_code == 0, result.output
    # THEN the reader gives typed samples, stamped on our clock, for each worker
    log = stack_log.read(log_path)
    assert log.header["interval"] == 0.25 and sorted(log.header["pids"]) == sorted(two_targets)
    assert not log.failures and not log.torn_tail
    by_worker = {pid: [s for s in log.samples if s.worker_pid == pid] for pid in two_targets}
    for samples in by_worker.values():
        stamps = sorted({s.taken_at for s in samples})
        assert 5 <= len(stamps) <= 7, stamps
        assert all("cpu_dump_marker_waiting" in s.folded() for s in samples)
    started = datetime.fromisoformat(log.header["started_at"])
    assert all(timedelta(0) <= s.taken_at - started < timedelta(seconds=3) for s in log.samples)
    # AND the DataFrame has a row per thread per dump
    frame = stack_log.to_dataframe(log.samples)
    assert len(frame) == len(log.samples)
    assert set(frame["worker_pid"]) == set(two_targets)
    assert (frame["leaf"] == "sleep").all() or frame["stack"].str.contains("marker").all()
    assert str(frame["taken_at"].dt.tz) == "UTC"


@pytest.mark.slow
def test_a_killed_capture_keeps_every_complete_line(python_process, tmp_path) -> None:
    # GIVEN a periodic dump under way
    target = python_process(TARGET).pid
    log_path = tmp_path / "stacks.jsonl"
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "profiler",
            "cpu",
            "dump",
            "--pid",
            str(target),
            "--interval",
            "0.1",
            "-o",
            str(log_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        retry(lambda: log_path.exists() and log_path.read_text().count("\n") > 5, timeout=20)
        # WHEN it is killed outright
        cli.kill()
        cli.communicate(timeout=10)
    finally:
        stop_pid(cli.pid)
    # THEN whatever was written reads back (a torn last line is dropped, not fatal)
    log = stack_log.read(log_path)
    assert len(log.samples) >= 5
    assert all(s.worker_pid == target for s in log.samples)


def test_interval_needs_an_output_file(run_cli) -> None:
    result = run_cli("cpu", "dump", "--pid", "1", "--interval", "1")
    assert result.exit_code == 2, result.output
    assert "--interval needs -o FILE" in result.stderr


def test_a_file_that_is_not_a_log_is_exit_7(tmp_path) -> None:
    bogus = tmp_path / "stacks.jsonl"
    bogus.write_text('{"kind": "header", "format": "something-else", "version": 1}\n')
    with pytest.raises(InputError) as info:
        stack_log.read(bogus)
    assert int(info.value.exit_code) == 7
    assert "is not a profiler-stack-samples file" in info.value.message
