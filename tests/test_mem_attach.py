"""`profiler mem attach` on real Python processes: pre-flight, parallel attach, detach."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import venv
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from memray import FileReader

from profiler.capture.processes import is_running, spawn_python_until_ready, stop_pid
from profiler.memory import rss
from profiler.memory.attach import still_tracking

MIB = 2**20
BIG_MIB = 40

# Allocates and frees 40 MiB in a known function every 0.2 s, so a capture that
# starts at any moment sees it at its peak; a 1 MiB side allocation elsewhere.
ALLOCATOR = f"""
import time

def mem_attach_marker_big():
    return b"x" * ({BIG_MIB} * {MIB})  # written, so resident: RSS sees it too

def mem_attach_marker_small():
    return b"y" * {MIB}

print("ready", flush=True)
while True:
    big = mem_attach_marker_big()
    small = mem_attach_marker_small()
    time.sleep(0.1)
    del big, small
    time.sleep(0.1)
"""


def _memray_mapped(pid: int) -> bool:
    """True when memray's extension is loaded in ``pid``: the trace of an injection."""
    return "_memray" in Path(f"/proc/{pid}/maps").read_text()


def _attach(run_cli: Any, pid: int, out: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    result = run_cli("mem", "attach", "--pid", str(pid), "-o", str(out), "--json", *args)
    return result, (json.loads(result.stdout) if result.stdout.strip() else {})


@pytest.mark.slow
def test_the_top_site_by_peak_is_the_function_that_allocated_it(
    run_cli, python_process, tmp_path: Path
) -> None:
    # GIVEN a worker that repeatedly holds 40 MiB allocated in a known function
    pid = python_process(ALLOCATOR).pid
    # WHEN memray is attached for 3 s
    result, manifest = _attach(run_cli, pid, tmp_path, "-d", "3")
    # THEN the capture attributes the peak to that function, within 10%
    assert result.exit_code == 0, result.output
    (worker,) = manifest["workers"]
    assert worker["status"] == "done", worker
    reader = FileReader(worker["capture"])
    assert reader.metadata.pid == pid
    top = max(
        reader.get_high_watermark_allocation_records(merge_threads=True), key=lambda r: r.size
    )
    function, _, _ = top.stack_trace()[0]
    assert function == "mem_attach_marker_big"
    assert abs(top.size - BIG_MIB * MIB) <= 0.1 * BIG_MIB * MIB
    assert abs(reader.metadata.peak_memory - (BIG_MIB + 1) * MIB) <= 0.1 * (BIG_MIB + 1) * MIB
    # AND tracking was active quickly, and the worker is no longer tracked
    assert manifest["all_tracking_after_seconds"] < 5
    assert is_running(pid) and not still_tracking(pid)
    # AND the RSS timeline has the worker's memory on our clock
    timeline = rss.read(Path(manifest["rss_timeline"]))
    points = [p for p in timeline.points if p.worker_pid == pid]
    assert len(points) >= 5
    assert max(p.rss_bytes for p in points) > BIG_MIB * MIB
    assert worker["rss_peak_bytes"] == timeline.peak(pid)
    # AND memray's own snapshots give the heap on the same clock, inside the window
    heap = rss.from_capture(Path(worker["capture"]))
    assert len(heap) > 10 and {h.worker_pid for h in heap} == {pid}
    assert max(h.heap_bytes for h in heap) >= 0.9 * BIG_MIB * MIB
    started = datetime.fromisoformat(manifest["started_at"])
    ended = datetime.fromisoformat(manifest["ended_at"])
    assert all(started <= h.taken_at <= ended for h in heap)


@pytest.mark.slow
def test_ctrl_c_detaches_every_worker_and_keeps_the_captures(
    python_process, tmp_path: Path
) -> None:
    # GIVEN two workers being captured for a minute
    pids = [python_process(ALLOCATOR).pid for _ in range(2)]
    targets = [a for pid in pids for a in ("--pid", str(pid))]
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "profiler",
            "mem",
            "attach",
            *targets,
            "-d",
            "60",
            "-o",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(_memray_mapped(pid) for pid in pids):
            time.sleep(0.2)
        time.sleep(1.5)  # attached; let it record a little
        # WHEN Ctrl-C
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=60)
    finally:
        stop_pid(cli.pid)
    # THEN exit 6, every capture readable, every worker alive and no longer tracked
    assert cli.returncode == 6, stderr
    assert "capture interrupted" in stderr
    (manifest_path,) = tmp_path.glob("mem-attach-*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["interrupted"] is True
    for worker in manifest["workers"]:
        assert worker["status"] == "done", worker
        reader = FileReader(worker["capture"])
        assert reader.metadata.pid == worker["pid"]
        assert reader.metadata.peak_memory > 0
    for pid in pids:
        assert is_running(pid)
        assert not still_tracking(pid)
    # AND attaching again works
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "profiler",
            "mem",
            "attach",
            "--pid",
            str(pids[0]),
            "-d",
            "1",
            "-o",
            str(tmp_path / "again"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with nothing installed: its interpreter cannot import memray."""
    where = tmp_path_factory.mktemp("bare-venv")
    venv.create(where, with_pip=False, symlinks=True)
    return where / "bin" / "python"


def _start(python: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    code = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
    child = subprocess.Popen(
        [str(python), "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.slow
def test_memray_not_importable_by_the_worker_is_exit_3_and_nothing_injected(
    run_cli, bare_python: Path, tmp_path: Path
) -> None:
    child = _start(bare_python)
    try:
        result = run_cli("mem", "attach", "--pid", str(child.pid), "-d", "1", "-o", str(tmp_path))
        assert result.exit_code == 3, result.output
        assert f"memray is not importable by PID {child.pid}'s interpreter" in result.stderr
        assert "nothing was injected" in result.stderr
        assert not _memray_mapped(child.pid)
        assert not any(tmp_path.iterdir())
    finally:
        stop_pid(child.pid)
        child.communicate()


@pytest.mark.slow
def test_a_different_memray_version_is_exit_3_and_nothing_injected(
    run_cli, bare_python: Path, tmp_path: Path
) -> None:
    # GIVEN a worker whose environment has another memray version
    site = tmp_path / "site"
    (site / "memray").mkdir(parents=True)
    (site / "memray" / "__init__.py").write_text("")
    (site / "memray-0.9.0.dist-info").mkdir()
    (site / "memray-0.9.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: memray\nVersion: 0.9.0\n"
    )
    child = _start(bare_python, env={"PYTHONPATH": str(site)})
    try:
        result = run_cli(
            "mem", "attach", "--pid", str(child.pid), "-d", "1", "-o", str(tmp_path / "out")
        )
        assert result.exit_code == 3, result.output
        assert f"PID {child.pid} has memray 0.9.0, we drive" in result.stderr
        assert not _memray_mapped(child.pid)
    finally:
        stop_pid(child.pid)
        child.communicate()


def test_no_debugger_is_exit_5(run_cli, tmp_path: Path) -> None:
    child = spawn_python_until_ready("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    try:
        result = run_cli(
            "mem",
            "attach",
            "--pid",
            str(child.pid),
            "-d",
            "1",
            "-o",
            str(tmp_path),
            env={"PROFILER_GDB": str(tmp_path / "no-gdb"), "PROFILER_LLDB": str(tmp_path / "x")},
        )
    finally:
        stop_pid(child.pid)
        child.communicate()
    assert result.exit_code == 5, result.output
    assert "gdb or lldb" in result.stderr


def test_a_missing_pid_is_exit_3(run_cli, tmp_path: Path) -> None:
    result = run_cli("mem", "attach", "--pid", "4194303", "-d", "1", "-o", str(tmp_path))
    assert result.exit_code == 3, result.output
    assert "no process with PID 4194303" in result.stderr


@pytest.mark.slow
def test_lend_memray_captures_a_worker_whose_environment_has_none(
    run_cli, bare_python: Path, tmp_path: Path
) -> None:
    # GIVEN a worker on the same Python whose environment cannot import memray
    site_packages = sorted(bare_python.parent.parent.glob("lib/python*/site-packages"))
    before = {p.name for d in site_packages for p in d.iterdir()}
    child = subprocess.Popen(
        [str(bare_python), "-c", ALLOCATOR],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        # WHEN memray is lent for the capture
        result, manifest = _attach(run_cli, child.pid, tmp_path, "-d", "2", "--lend-memray")
        # THEN the capture is the worker's, and its environment gained nothing
        assert result.exit_code == 0, result.output
        (worker,) = manifest["workers"]
        assert worker["memray_lent"] is True and worker["status"] == "done"
        reader = FileReader(worker["capture"])
        assert reader.metadata.pid == child.pid
        assert reader.metadata.peak_memory > BIG_MIB * MIB * 0.9
        assert {p.name for d in site_packages for p in d.iterdir()} == before
        assert not still_tracking(child.pid)
    finally:
        stop_pid(child.pid)
        child.communicate()


@pytest.mark.slow
def test_a_worker_that_exits_mid_capture_keeps_its_capture_and_is_marked(
    run_cli, python_process, tmp_path: Path
) -> None:
    # GIVEN two workers, one of which dies about 6 s after it starts (os._exit, as a
    # recycled or killed worker does: memray's own timer thread would delay a normal exit)
    stays = python_process(ALLOCATOR).pid
    leaves = python_process(
        "import os, threading\nthreading.Timer(6, os._exit, (0,)).start()\n" + ALLOCATOR
    ).pid
    # WHEN both are captured for 9 s (attaching under load can take 4 s)
    result = run_cli(
        "mem",
        "attach",
        "--pid",
        str(stays),
        "--pid",
        str(leaves),
        "-d",
        "9",
        "-o",
        str(tmp_path),
        "--json",
    )
    # THEN the capture succeeds; the one that left is marked, and its capture reads
    assert result.exit_code == 0, result.output
    workers = {w["pid"]: w for w in json.loads(result.stdout)["workers"]}
    assert workers[stays]["status"] == "done"
    assert workers[leaves]["status"] == "exited", workers[leaves]
    assert f"worker {leaves} exited during the capture" in result.stderr
    reader = FileReader(workers[leaves]["capture"])
    assert reader.metadata.pid == leaves
    top = max(
        reader.get_high_watermark_allocation_records(merge_threads=True), key=lambda r: r.size
    )
    assert top.stack_trace()[0][0] == "mem_attach_marker_big"


def test_mem_live_refuses_a_pipe_and_a_missing_pid(run_cli) -> None:
    missing = run_cli("mem", "live", "--pid", "4194303")
    assert missing.exit_code == 2, missing.output  # a pipe is checked first: no terminal
    assert "stdout is not one" in missing.stderr
