"""`profiler cpu record` on real Python processes: one py-spy per worker, started and
stopped together, every artifact attributed to the right PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest

from profiler.analysis import collapsed
from profiler.capture.processes import stop_pid
from profiler.capture.record import (
    PAUSE_FIRST_THREAD_SECONDS,
    RecordOptions,
    blocking_pause_seconds,
    plan,
)
from tests.helpers import retry

# Each worker burns CPU in a function named after it, so attribution is checkable.
WORKER = """
import sys, time

def {name}():
    deadline = time.perf_counter() + 0.02
    while time.perf_counter() < deadline:
        pass

print('ready', flush=True)
stop_at = time.monotonic() + float(sys.argv[1]) if len(sys.argv) > 1 else None
while stop_at is None or time.monotonic() < stop_at:
    {name}()
"""

THREADED = """
import threading, time
for _ in range({extra}):
    threading.Thread(target=threading.Event().wait, daemon=True).start()
print('ready', flush=True)
time.sleep(600)
"""


def _worker(python_process: Any, name: str) -> int:
    return int(python_process(WORKER.format(name=name)).pid)


def _record(run_cli: Any, pids: list[int], out: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    targets = [a for pid in pids for a in ("--pid", str(pid))]
    result = run_cli("cpu", "record", *targets, "-o", str(out), "--json", *args)
    manifest = json.loads(result.stdout) if result.stdout.strip() else {}
    return result, manifest


def _svg_titles(path: Path) -> str:
    root = ET.parse(path).getroot()
    return "\n".join(el.text or "" for el in root.iter() if el.tag.endswith("title"))


@pytest.mark.slow
def test_each_worker_gets_its_own_flamegraph_and_the_merge_has_both(
    run_cli, python_process, tmp_path: Path
) -> None:
    # GIVEN two workers, each spinning in its own function
    alpha = _worker(python_process, "record_marker_alpha")
    beta = _worker(python_process, "record_marker_beta")
    # WHEN both are recorded for 2 s at 20 Hz (under the 1% pause guard for one thread)
    result, manifest = _record(run_cli, [alpha, beta], tmp_path, "-d", "2", "--rate", "20")
    # THEN every worker was sampled at that rate through the window
    assert result.exit_code == 0, result.output
    workers = {w["pid"]: w for w in manifest["workers"]}
    assert set(workers) == {alpha, beta}
    for pid, marker, other in ((alpha, "alpha", "beta"), (beta, "beta", "alpha")):
        worker = workers[pid]
        assert worker["status"] == "window", worker
        assert worker["rate"] == 20 and worker["samples"] >= 25, worker
        files = {kind: Path(path) for kind, path in worker["artifacts"].items()}
        assert all(f.name.startswith(f"{kind}-{pid}-") for kind, f in files.items())
        # the collapsed stacks: mostly in its own function, never in the other's
        stacks = collapsed.read(files["collapsed"])
        assert collapsed.inclusive(stacks, f"record_marker_{marker}") >= 0.8 * worker["samples"]
        assert collapsed.inclusive(stacks, f"record_marker_{other}") == 0
        # the flamegraph and the speedscope file name it too
        assert f"record_marker_{marker} (" in _svg_titles(files["flamegraph"])
        assert f"record_marker_{other}" not in files["flamegraph"].read_text()
        speedscope = json.loads(files["speedscope"].read_text())
        names = {frame["name"] for frame in speedscope["shared"]["frames"]}
        assert f"record_marker_{marker}" in names
    merged = manifest["merged"]
    merged_stacks = collapsed.read(Path(merged["artifacts"]["collapsed"]))
    assert merged["samples"] == collapsed.total(merged_stacks)
    assert merged["samples"] == sum(workers[pid]["flamegraph_samples"] for pid in (alpha, beta))
    assert all(
        w["flamegraph_samples"]
        == collapsed.total(collapsed.read(Path(w["artifacts"]["collapsed"])))
        for w in workers.values()
    )
    merged_titles = _svg_titles(Path(merged["artifacts"]["flamegraph"]))
    assert "record_marker_alpha (" in merged_titles and "record_marker_beta (" in merged_titles
    # AND the manifest on disk is what was printed; the first flamegraph came quickly
    (on_disk,) = tmp_path.glob("cpu-record-*.json")
    assert json.loads(on_disk.read_text()) == manifest
    assert manifest["first_flamegraph_seconds"] < 1.0
    assert manifest["interrupted"] is False and 1.9 < manifest["seconds"] < 4


@pytest.mark.slow
def test_a_worker_that_dies_mid_capture_does_not_spoil_the_others(
    run_cli, python_process, tmp_path: Path
) -> None:
    # GIVEN a worker that exits after 2 s (time enough for py-spy to attach on a busy
    # machine), and one that stays
    stays = _worker(python_process, "record_marker_stays")
    dies = python_process(
        WORKER.format(name="record_marker_dies")
        .replace("len(sys.argv) > 1", "True")
        .replace("float(sys.argv[1])", "2.0")
    ).pid
    # WHEN both are recorded for 4 s
    result, manifest = _record(run_cli, [stays, dies], tmp_path, "-d", "4")
    # THEN the capture succeeds, the death is reported, and its samples are kept
    assert result.exit_code == 0, result.output
    workers = {w["pid"]: w for w in manifest["workers"]}
    assert workers[stays]["status"] == "window"
    assert workers[dies]["status"] == "exited", workers[dies]
    assert workers[dies]["seconds"] < 3.5
    assert f"worker {dies}: worker exited" in result.stderr
    kept = collapsed.read(Path(workers[dies]["artifacts"]["collapsed"]))
    assert collapsed.inclusive(kept, "record_marker_dies") > 0
    assert "record_marker_dies (" in _svg_titles(
        Path(manifest["merged"]["artifacts"]["flamegraph"])
    )


def _pyspy_running(pid: int) -> bool:
    """Whether the command ``pid`` has started its py-spy (it writes nothing until stopped)."""
    return any(child.name() == "py-spy" for child in psutil.Process(pid).children())


def _start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "profiler", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "duration", "exit_code"),
    [
        (signal.SIGINT, ["-d", "60"], 6),  # cut short: interrupted, data kept
        (signal.SIGTERM, ["-d", "60"], 6),
        (signal.SIGINT, [], 0),  # no -d: Ctrl-C is how the user says "stop"
    ],
    ids=["ctrl-c-with-duration", "sigterm", "ctrl-c-without-duration"],
)
def test_stopping_early_keeps_what_was_sampled(
    python_process, tmp_path: Path, sig: signal.Signals, duration: list[str], exit_code: int
) -> None:
    # GIVEN a recording under way
    pid = _worker(python_process, "record_marker_stopped")
    cli = _start_cli("cpu", "record", "--pid", str(pid), "-o", str(tmp_path), *duration)
    try:
        # (py-spy started, waited for; then a second of its samples at 100 Hz)
        retry(lambda: _pyspy_running(cli.pid), timeout=30, what="py-spy under cpu record")
        time.sleep(1.0)
        # WHEN it is signalled
        cli.send_signal(sig)
        _, stderr = cli.communicate(timeout=30)
    finally:
        stop_pid(cli.pid)
    # THEN the exit code says how it ended, and the artifacts are all there
    assert cli.returncode == exit_code, stderr
    (manifest_path,) = tmp_path.glob("cpu-record-*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["interrupted"] is (exit_code == 6)
    (worker,) = manifest["workers"]
    assert worker["samples"] > 0
    assert "record_marker_stopped (" in _svg_titles(Path(worker["artifacts"]["flamegraph"]))
    if exit_code == 6:
        assert "capture interrupted after" in stderr
        assert str(manifest_path) in stderr


@pytest.mark.slow
def test_existing_files_are_not_overwritten_without_force(
    run_cli, python_process, tmp_path: Path
) -> None:
    # GIVEN a manifest already where this and the next seconds' captures would write
    pid = _worker(python_process, "record_marker_force")
    now = datetime.now(timezone.utc)
    for offset in range(30):
        stamp = (now + timedelta(seconds=offset)).strftime("%Y%m%dT%H%M%SZ")
        (tmp_path / f"cpu-record-{stamp}.json").write_text("precious\n")
    # WHEN recording without --force
    result = run_cli("cpu", "record", "--pid", str(pid), "-d", "0.5", "-o", str(tmp_path))
    # THEN refused before attaching, nothing touched
    assert result.exit_code == 2, result.output
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert {p.read_text() for p in tmp_path.iterdir()} == {"precious\n"}
    # AND with --force it records
    forced = run_cli(
        "cpu", "record", "--pid", str(pid), "-d", "0.5", "-o", str(tmp_path), "--force"
    )
    assert forced.exit_code == 0, forced.output
    assert any(tmp_path.glob("flamegraph-*.svg"))


def test_a_missing_pid_is_exit_3(run_cli, tmp_path: Path) -> None:
    result = run_cli("cpu", "record", "--pid", "4194303", "-d", "1", "-o", str(tmp_path))
    assert result.exit_code == 3, result.output
    assert "no process with PID 4194303" in result.stderr
    assert not any(tmp_path.iterdir())


def test_a_non_python_process_is_exit_3(run_cli, tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        result = run_cli("cpu", "record", "--pid", str(sleeper.pid), "-d", "1", "-o", str(tmp_path))
    finally:
        stop_pid(sleeper.pid)
        sleeper.wait()
    assert result.exit_code == 3, result.output
    assert "is not a Python process" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a target as another user")
@pytest.mark.parametrize("command", [["cpu", "record", "-d", "1"], ["cpu", "dump"]])
def test_ptrace_denied_is_exit_3_with_the_fix(
    python_process, tmp_path: Path, command: list[str]
) -> None:
    """The target runs as ``nobody``; the command runs without CAP_SYS_PTRACE.

    For ptrace, root without CAP_SYS_PTRACE *is* an unprivileged user (the
    kernel's ptrace_may_access checks the uid, then that capability), and
    unlike ``setpriv --reuid`` it does not need the interpreter to live where
    ``nobody`` may read it.
    """
    target = python_process(
        "import os, time\nos.setgid(65534)\nos.setuid(65534)\n"
        "print('ready', flush=True)\ntime.sleep(600)\n"
    )
    result = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-sys_ptrace",
            sys.executable,
            "-m",
            "profiler",
            *command,
            "--pid",
            str(target.pid),
            *(["-o", str(tmp_path)] if "record" in command else []),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert f"permission denied attaching to PID {target.pid}" in result.stderr
    assert "CAP_SYS_PTRACE" in result.stderr


@pytest.mark.slow
def test_py_spy_missing_is_exit_5(run_cli, python_process, tmp_path: Path) -> None:
    pid = _worker(python_process, "record_marker_no_pyspy")
    result = run_cli(
        "cpu",
        "record",
        "--pid",
        str(pid),
        "-d",
        "1",
        "-o",
        str(tmp_path),
        env={"PROFILER_PYSPY": str(tmp_path / "no-py-spy")},
    )
    assert result.exit_code == 5, result.output
    assert "py-spy" in result.stderr


# The blocking-mode guard: lower the rate rather than freeze a worker.


def test_one_thread_at_a_low_rate_is_sampled_as_asked(python_process) -> None:
    (only,) = plan([python_process(THREADED.format(extra=0)).pid], RecordOptions(rate=10))
    assert only.rate == 10 and not only.nonblocking and only.reason is None
    assert only.predicted_pause <= 0.01


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra_threads", "rate", "nonblocking"), [(19, 2, False), (199, 100, True)]
)
def test_many_threads_lower_the_blocking_rate(
    python_process, extra_threads: int, rate: int, nonblocking: bool
) -> None:
    # GIVEN a worker with many threads (py-spy stops each one per blocking sample)
    pid = python_process(THREADED.format(extra=extra_threads)).pid
    # WHEN planning 100 Hz blocking with a 1% pause budget
    (worker,) = plan([pid], RecordOptions(rate=100, max_pause=0.01))
    # THEN the rate is lowered (or sampling made nonblocking) so the budget holds
    assert worker.threads == extra_threads + 1
    assert (worker.rate, worker.nonblocking) == (rate, nonblocking)
    assert worker.predicted_pause <= 0.01
    assert worker.reason is not None and f"{extra_threads + 1} threads" in worker.reason


def test_the_guard_can_be_turned_off_and_nonblocking_needs_none() -> None:
    for options in (
        RecordOptions(rate=500, max_pause=0),
        RecordOptions(rate=500, nonblocking=True),
    ):
        (worker,) = plan([os.getpid()], options)
        assert worker.rate == 500 and worker.reason is None


def test_pause_model_grows_with_threads() -> None:
    assert blocking_pause_seconds(1) == PAUSE_FIRST_THREAD_SECONDS
    assert blocking_pause_seconds(50) > 20 * blocking_pause_seconds(1)


# cpu top: py-spy's live view, on a real terminal (a pseudo-terminal here).


def _run_on_a_terminal(argv: list[str], seconds: float) -> tuple[int, str]:
    """Run ``argv`` on a pty for ``seconds``, then Ctrl-C it as a user would; its screen text."""
    import pty
    import select

    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        argv, stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    screen += os.read(controller, 65536)
                except OSError:
                    break
        os.killpg(child.pid, signal.SIGINT)
        returncode = child.wait(timeout=10)
    finally:
        stop_pid(child.pid)
        os.close(controller)
    return returncode, screen.decode("utf-8", "replace")


@pytest.mark.slow
def test_top_shows_the_busy_function_live(python_process) -> None:
    pid = _worker(python_process, "record_marker_top")
    returncode, screen = _run_on_a_terminal(
        [sys.executable, "-m", "profiler", "cpu", "top", "--pid", str(pid), "--rate", "20"], 4
    )
    assert "record_marker_top" in screen, screen[-2000:]
    assert returncode == 0, screen[-2000:]


def test_top_refuses_a_pipe(run_cli, python_process) -> None:
    pid = _worker(python_process, "record_marker_top_pipe")
    result = run_cli("cpu", "top", "--pid", str(pid))
    assert result.exit_code == 2, result.output
    assert "stdout is not one" in result.stderr


def test_top_of_a_missing_pid_is_exit_3(run_cli) -> None:
    result = run_cli("cpu", "top", "--pid", "4194303")
    assert result.exit_code == 3, result.output
    assert "no process with PID 4194303" in result.stderr
