"""The memory scenario on a real lab: a real OOM kill, and the Diagnosis that names it.

The lab's worker runs in a memory cgroup of its own (``lab up --memory-limit``);
its ``GET /servers`` builds large responses while its session is held, and a few
users drive it past the limit, so the kernel OOM-kills it and gunicorn starts
another. A ``session run`` with memray on records it; its Diagnosis must name the
OOM kill and the allocating endpoint. Needs root and a writable memory cgroup:
elsewhere the test skips, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.errors import ExitCode, UnsupportedHost
from profiler.lab import memory_cgroup
from profiler.lab.lifecycle import down, up
from profiler.lab.load import run_load
from profiler.lab.record import reference_options
from profiler.session import open as open_session
from profiler.session.summary import summarize
from tests.conftest import run_profiler
from tests.helpers import retry

MIB = 1 << 20
LIMIT = 256 * MIB  # one idle worker takes about a third of it; a few responses the rest
USERS = 5
LOAD_SECONDS = 8.0
SESSION_SECONDS = 14


def _require_memory_cgroup() -> None:
    try:
        made = memory_cgroup.create(f"profiler-test-{os.getpid()}", 64 * MIB)
    except UnsupportedHost as exc:
        pytest.skip(f"no writable memory cgroup here, so no OOM kill to provoke: {exc.message}")
    memory_cgroup.remove(made.path)


@pytest.mark.slow
def test_the_memory_scenario_is_oom_killed_and_diagnosed(postgres_dsn: str, tmp_path: Path) -> None:
    _require_memory_cgroup()
    # GIVEN the memory scenario: one worker, a 256 MiB limit on its cgroup
    options = reference_options(
        "fresh", postgres_dsn, scenario="memory", workers=1, memory_limit=LIMIT
    )
    state = up(options)
    folder = tmp_path / "session"
    recorder = None
    try:
        assert state.master is not None and state.memory_cgroup is not None
        worker = state.gateway_workers[0].pid
        # WHEN a session with memray records it while a few users load /servers
        command = [sys.executable, "-m", "profiler", "session", "run"]
        command += ["--pid", str(state.master.pid), "--dsn", postgres_dsn]
        command += ["-d", str(SESSION_SECONDS), "--no-cpu", "--mem", "--rss-interval", "0.25"]
        recorder = subprocess.Popen(
            [*command, "-o", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        retry(
            lambda: (
                (folder / "manifest.json").exists()
                and json.loads((folder / "manifest.json").read_text()).get("window_started_at")
            ),
            timeout=90,
            what="the session's probes live (task sampler and memray attached)",
        )
        run_load(state.url, users=USERS, seconds=LOAD_SECONDS, mix={"servers": 1.0})
        _, stderr = recorder.communicate(timeout=120)
        assert recorder.returncode == 0, stderr
    finally:
        if recorder is not None and recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        down()
    # THEN the kernel killed the worker, and the Diagnosis says so first, naming the endpoint
    assert not Path(state.memory_cgroup).exists()  # lab down removed the cgroup
    summary = summarize(open_session(folder))
    vanished = [f for f in summary.findings if f.rule == "worker-vanished"]
    assert vanished and vanished[0].evidence["exit"] == "oom-killed", summary.findings
    assert vanished[0].evidence["worker_pid"] == worker
    first = summary.diagnosis[0]
    assert first.cause == "oom-kill", summary.diagnosis
    assert f"worker {worker} killed by the OOM killer at its 256 MiB limit" in first.title
    assert "allocated under GET /servers while it held sessions" in first.title, first.title
    assert first.where[0].role == "allocation"
    assert first.where[0].file.endswith("memory_routes.py"), first.where
    shown = run_profiler("session", "show", str(folder), "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["diagnosis"][0]["cause"] == "oom-kill"


def test_no_writable_memory_cgroup_is_exit_5(tmp_path: Path) -> None:
    # GIVEN a cgroup root with no memory hierarchy (a container's read-only view, say)
    # WHEN the lab is asked for a memory limit there
    with pytest.raises(UnsupportedHost) as refused:
        memory_cgroup.create("profiler-lab-test", 64 * MIB, root=tmp_path)
    # THEN one line says why, with exit 5, as a missing tool
    assert refused.value.exit_code == ExitCode.TOOL_MISSING
    assert "no memory cgroup hierarchy" in refused.value.message


def test_a_v2_hierarchy_with_the_memory_controller_is_chosen_first(tmp_path: Path) -> None:
    # GIVEN a unified hierarchy that has the memory controller, and a v1 one beside it
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    # WHEN a limit is asked for
    made = memory_cgroup.create("profiler-lab-1", 300 * MIB, root=tmp_path)
    # THEN the cgroup hangs from the v2 root, its memory.max set
    assert (made.path, made.version) == (tmp_path / "profiler-lab-1", 2)
    assert (made.path / "memory.max").read_text() == f"{300 * MIB}\n"
    assert memory_cgroup.remove(made.path, timeout=0) is False  # our fake files: not empty
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory\n"


def test_a_v1_hierarchy_is_used_without_a_v2_memory_controller(tmp_path: Path) -> None:
    # GIVEN a hybrid host: the unified hierarchy has no memory controller
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    # WHEN / THEN v1, with memory.limit_in_bytes
    made = memory_cgroup.create("profiler-lab-2", 64 * MIB, root=tmp_path)
    assert made.version == 1 and made.path.name == "profiler-lab-2"
    assert (made.path / "memory.limit_in_bytes").read_text() == f"{64 * MIB}\n"
