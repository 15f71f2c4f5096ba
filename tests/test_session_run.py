"""`profiler session run` against real workers and a real PostgreSQL: every probe, one folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from profiler.capture import stack_log, task_log
from profiler.capture.processes import stop_pid
from profiler.memory import rss
from profiler.pg import recording
from tests.helpers import lines_of_kind, retry

WORKER = """
import threading, time

def session_marker_busy():  # on the stack whenever a dump looks: it sleeps inside too
    deadline = time.perf_counter() + 0.02
    while time.perf_counter() < deadline:
        pass
    time.sleep(0.01)

print("ready", flush=True)
while True:
    session_marker_busy()
"""


def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def _live(directory: Path) -> bool:
    """Whether the session in ``directory`` has opened its window (every probe live)."""
    try:
        return bool(_manifest(directory).get("window_started_at"))
    except (OSError, ValueError):  # not written yet
        return False


@pytest.mark.slow
@pytest.mark.postgres
def test_a_session_holds_every_probe_in_one_folder(
    run_cli, python_process, postgres_dsn: str, open_sessions, tmp_path: Path
) -> None:
    # GIVEN a worker and two connections idle in a transaction
    pid = python_process(WORKER).pid
    open_sessions(2, "idle in transaction")
    out = tmp_path / "session"
    # WHEN a 3 s session runs
    result = run_cli(
        "session",
        "run",
        "--pid",
        str(pid),
        "--dsn",
        postgres_dsn,
        "-d",
        "3",
        "-o",
        str(out),
        "--json",
    )
    # THEN every probe ran and its data is where the manifest says
    assert result.exit_code == 0, result.output
    manifest = _manifest(out)
    assert json.loads(result.stdout) == manifest
    assert manifest["format"] == "profiler-session" and manifest["version"] == 1
    assert manifest["interrupted"] is False and manifest["ended_at"] is not None
    assert [t["pid"] for t in manifest["targets"]] == [pid]
    assert ":" not in (manifest["dsn"] or "").split("@")[0].removeprefix("postgresql://")
    probes = manifest["probes"]
    assert {name: p["status"] for name, p in probes.items()} == {
        "pg": "ok",
        "stacks": "ok",
        "rss": "ok",
        "workers": "ok",
        "tasks": "ok",
        "cpu": "ok",
    }
    # the task sampler ran in the worker (no event loop: rounds without tasks)
    assert probes["tasks"]["files"] == [f"tasks/tasks-{pid}.jsonl"]
    assert task_log.read_end(out / "tasks" / f"tasks-{pid}.jsonl")["reason"] == "stopped"
    # the window started once every probe was live, and the task sampler had all 3 s of it
    window = datetime.fromisoformat(manifest["window_started_at"])
    assert all(datetime.fromisoformat(p["live_at"]) <= window for p in probes.values())
    rounds = task_log.read_rounds(out / "tasks" / f"tasks-{pid}.jsonl")
    assert rounds["taken_at"].iloc[0] <= window + timedelta(seconds=0.5)
    assert rounds["taken_at"].iloc[-1] >= window + timedelta(seconds=2.8)
    for probe in probes.values():
        assert all((out / f).exists() for f in probe["files"]), probe
    # the activity recording saw the held connections, every second
    activity = recording.read(out / "activity.jsonl")
    assert len(activity.snapshots) >= 3
    assert (
        max(sum(b.state == "idle in transaction" for b in s.backends) for s in activity.snapshots)
        >= 2
    )
    assert "activity.parquet" in probes["pg"]["files"]
    # stacks of the worker, stamped inside the session
    log = stack_log.read(out / "stacks.jsonl")
    assert {s.worker_pid for s in log.samples} == {pid}
    assert any("session_marker_busy" in s.folded() for s in log.samples)
    # RSS of the worker, and its flamegraph
    assert rss.read(out / "rss.jsonl").peak(pid)
    flamegraphs = [f for f in probes["cpu"]["files"] if f.endswith(".svg") and str(pid) in f]
    assert flamegraphs and "session_marker_busy" in (out / flamegraphs[0]).read_text()


@pytest.mark.slow
@pytest.mark.postgres
def test_ctrl_c_stops_every_probe_and_keeps_the_session(
    python_process, postgres_dsn: str, tmp_path: Path
) -> None:
    pid = python_process(WORKER).pid
    out = tmp_path / "session"
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "profiler",
            "session",
            "run",
            "--pid",
            str(pid),
            "--dsn",
            postgres_dsn,
            "-d",
            "60",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # (waited for, not timed: every probe live, and each has recorded something)
        retry(
            lambda: (
                _live(out)
                and lines_of_kind(out / "stacks.jsonl", "sample")
                and lines_of_kind(out / "activity.jsonl", "snapshot")
            ),
            timeout=60,
            what="a live session with a stack sample and a snapshot",
        )
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=90)
    finally:
        stop_pid(cli.pid)
    assert cli.returncode == 6, stderr
    manifest = _manifest(out)
    assert manifest["interrupted"] is True and manifest["ended_at"] is not None
    assert all(p["status"] == "ok" for p in manifest["probes"].values()), manifest["probes"]
    assert recording.read(out / "activity.jsonl").snapshots
    assert stack_log.read(out / "stacks.jsonl").samples


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_that_dies_is_recorded_and_the_others_go_on(
    run_cli, python_process, postgres_dsn: str, tmp_path: Path
) -> None:
    # GIVEN a worker that exits (os._exit: no cleanup) once told to, mid-session
    signal_file = tmp_path / "die"
    stays = python_process(WORKER).pid
    dies = python_process(
        "import os, threading, time\n"
        f"def wait():\n    while not os.path.exists({str(signal_file)!r}): time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "threading.Thread(target=wait, daemon=True).start()\n" + WORKER
    ).pid
    out = tmp_path / "session"
    done = threading.Event()

    def kill_once_live() -> None:
        """Tell the worker to die once the session's window is open and it has been dumped."""
        while not done.wait(0.05):
            if _live(out) and lines_of_kind(out / "stacks.jsonl", "sample"):
                signal_file.touch()
                return

    killer = threading.Thread(target=kill_once_live, daemon=True)
    killer.start()
    try:
        result = run_cli(
            "session", "run", "--pid", str(stays), "--pid", str(dies), "--dsn", postgres_dsn,
            "-d", "6", "--no-cpu", "-o", str(out), "--json",
        )  # fmt: skip
    finally:
        done.set()
        killer.join()
    assert result.exit_code == 0, result.output
    probes = _manifest(out)["probes"]
    assert probes["pg"]["status"] == "ok"
    assert probes["rss"]["status"] == "partial" and str(dies) in probes["rss"]["error"]
    assert probes["workers"]["facts"]["vanished"] == [dies], probes["workers"]
    assert probes["stacks"]["status"] == "partial"
    samples = stack_log.read(out / "stacks.jsonl").samples
    late = [s for s in samples if s.worker_pid == stays]
    assert len({s.taken_at for s in late}) >= 3  # the survivor was dumped to the end


def test_an_unreachable_database_stops_before_anything_starts(
    run_cli, python_process, tmp_path: Path
) -> None:
    pid = python_process(WORKER).pid
    out = tmp_path / "session"
    result = run_cli(
        "session",
        "run",
        "--pid",
        str(pid),
        "--dsn",
        "postgresql://nobody@127.0.0.1:9/none",
        "-d",
        "2",
        "-o",
        str(out),
    )
    assert result.exit_code == 4, result.output
    assert not out.exists()


@pytest.mark.postgres
def test_a_folder_that_is_not_empty_needs_force(
    run_cli, python_process, postgres_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "precious.txt").write_text("keep\n")
    pid = python_process(WORKER).pid
    result = run_cli(
        "session", "run", "--pid", str(pid), "--dsn", postgres_dsn, "-d", "2", "-o", str(tmp_path)
    )
    assert result.exit_code == 2, result.output
    assert "is not empty" in result.stderr
