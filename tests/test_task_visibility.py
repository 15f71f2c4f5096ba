"""The task sampler says where it is blind: granian's Rust tasks, a worker with no asyncio loop."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from profiler.capture.processes import stop_pid
from profiler.lab.servers import worker_pids
from profiler.pg.embedded import free_port
from tests.helpers import retry

# A bare ASGI app: granian's --task-impl rust cannot run FastAPI (anyio asks asyncio for
# its tasks and finds Rust ones), and what is tested here is the sampler, not the app.
APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


@pytest.fixture
def granian_rust_tasks(tmp_path: Path) -> Iterator[int]:
    """A real granian master (one worker) running its tasks in Rust; its PID."""
    (tmp_path / "bare_asgi.py").write_text(APP)
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "granian", "--interface", "asgi", "--task-impl", "rust"),
            *("--workers", "1", "--port", str(port), "--working-dir", str(tmp_path)),
            "bare_asgi:app",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def serves() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        retry(serves, timeout=30, what="granian to answer")
        retry(lambda: worker_pids(server.pid), timeout=10, what="granian's worker")
        yield server.pid
    finally:
        for pid in [*worker_pids(server.pid), server.pid]:
            stop_pid(pid)
        server.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.postgres
def test_granian_rust_tasks_are_named_as_the_reason_no_task_is_sampled(
    run_cli, granian_rust_tasks: int, postgres_dsn: str, tmp_path: Path
) -> None:
    # WHEN a session runs on a granian whose tasks are Rust objects
    result = run_cli(
        *("session", "run", "--pid", str(granian_rust_tasks), "--dsn", postgres_dsn),
        *("-d", "2", "--no-cpu", "--no-mem", "-o", str(tmp_path / "s"), "--json"),
    )
    # THEN the session completes, and the tasks probe says why it saw nothing
    assert result.exit_code == 0, result.output
    tasks_probe = json.loads(result.stdout)["probes"]["tasks"]
    assert tasks_probe["status"] == "failed"
    assert "--task-impl rust" in tasks_probe["error"]
    assert "--task-impl rust" in result.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_without_an_event_loop_is_said_to_show_no_task(
    run_cli, python_process, postgres_dsn: str, tmp_path: Path
) -> None:
    # GIVEN a Python worker with no asyncio loop
    # (it runs bytecode now and then: an injection runs at the worker's next bytecode)
    code = "import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    pid = python_process(code).pid
    # WHEN
    result = run_cli(
        *("session", "run", "--pid", str(pid), "--dsn", postgres_dsn),
        *("-d", "2", "--no-cpu", "--no-mem", "-o", str(tmp_path / "s"), "--json"),
    )
    # THEN sampled, and said to have seen no task: not a silent 0
    assert result.exit_code == 0, result.output
    tasks_probe = json.loads(result.stdout)["probes"]["tasks"]
    assert tasks_probe["status"] == "ok"
    assert tasks_probe["facts"]["no_task_seen"] == [pid]
    assert f"no asyncio task seen in worker(s) {pid}" in result.stderr
