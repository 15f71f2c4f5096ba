"""The fast injection path: real wedged targets, real ptrace, memray's real channel.

The target wedges as a gateway whose pool is exhausted does: its main thread
waits on a Condition with a 30 s timeout (``QueuePool._do_get``), idle threads
block in ``Queue.get`` (AnyIO's workers), and one thread serves a TCP echo so
"still serving" is checked by talking to it, not by looking at it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from profiler.capture import channel, inject, task_control, task_inject, task_log
from profiler.capture.processes import stop_pid
from profiler.errors import AttachError
from profiler.memory.attach import still_tracking
from tests.helpers import retry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="ptrace injection is Linux only"),
]

WEDGED = """
import queue, socket, sys, threading

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)

def serve():
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(64))

def idle(q=queue.Queue()):
    q.get()

threading.Thread(target=serve, daemon=True).start()
for _ in range(3):
    threading.Thread(target=idle, daemon=True).start()
cond = threading.Condition()
print("ready", flush=True)
print(server.getsockname()[1], file=sys.stderr, flush=True)
with cond:
    while True:
        cond.wait(30)
"""

BUSY = """
print("ready", flush=True)
while True:
    sum(range(1000))
"""


def _start(python_process: Callable[[str], subprocess.Popen[str]]) -> tuple[int, int]:
    child = python_process(WEDGED)
    assert child.stderr is not None
    port = int(child.stderr.readline())
    return child.pid, port


def _check_healthy(pid: int, port: int, rss_before: int) -> None:
    """Serving, not stopped, no thread left stopped, RSS sane."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"ping")
        assert conn.recv(64) == b"ping"
    process = psutil.Process(pid)
    assert process.status() != psutil.STATUS_STOPPED
    for thread in process.threads():
        state = Path(f"/proc/{pid}/task/{thread.id}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state not in ("T", "t"), f"thread {thread.id} left in state {state}"
    assert process.memory_info().rss < rss_before + 200 * 2**20


def test_a_wedged_worker_gets_the_task_sampler_within_a_second(python_process, tmp_path) -> None:
    # GIVEN a worker whose every thread sleeps in a lock, queue or accept wait
    pid, port = _start(python_process)
    path = tmp_path / "tasks.jsonl"
    # WHEN the task sampler is injected
    started = time.time()
    route = task_inject.inject(pid, path, interval=0.2, duration=5, lease_seconds=None)
    # THEN it is sampling at once (memray's breakpoint route waits for the 30 s timeout)
    assert route == "fast"
    header = retry(lambda: path.exists() and task_log.read_header(path), what="sampler header")
    assert header["started_at"] - started < 2.0
    task_control.request_stop(path)
    assert task_control.wait_for_end([path], timeout=5) == []
    _check_healthy(pid, port, psutil.Process(pid).memory_info().rss)


def test_five_memray_attach_detach_cycles_leave_the_worker_serving(
    python_process, tmp_path
) -> None:
    # GIVEN a wedged worker
    pid, port = _start(python_process)
    rss_before = psutil.Process(pid).memory_info().rss
    for cycle in range(5):
        # WHEN memray attaches through the fast path, then detaches
        capture = tmp_path / f"memray-{cycle}.bin"
        command = [sys.executable, "-m", "profiler.memory.lend", "--pid", str(pid), "--no-lend"]
        command += ["--output", str(capture), "--duration", "60", "--method", "gdb"]
        started = time.monotonic()
        attached = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert attached.returncode == 0, attached.stderr
        assert time.monotonic() - started < 5
        assert "breakpoint route" not in attached.stderr
        # THEN detach is clean (a second detach finds nothing), and the worker serves on
        assert still_tracking(pid)  # detaches
        assert not still_tracking(pid)
        assert capture.exists()
        _check_healthy(pid, port, rss_before)


@pytest.mark.parametrize("step", ["thread", "load", "channel"])
def test_killing_the_injector_at_any_step_leaves_the_worker_running(
    python_process, step: str
) -> None:
    # GIVEN a wedged worker, and the injector paused at a step (the thread seized at "load")
    pid, port = _start(python_process)
    rss_before = psutil.Process(pid).memory_info().rss
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    command = [sys.executable, "-m", "profiler.capture.inject", "--pid", str(pid)]
    command += ["--library", str(channel.injector_library())]
    command += ["--port", str(listener.getsockname()[1])]
    helper = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, inject.PAUSE_ENV: step},
        start_new_session=True,
    )
    try:
        assert helper.stdout is not None
        assert json.loads(helper.stdout.readline()) == {"paused": step}
        # WHEN the injector and the profiler's end of the channel are killed there
        os.kill(helper.pid, signal.SIGKILL)
        helper.wait(timeout=10)
        listener.close()
    finally:
        stop_pid(helper.pid)
        helper.communicate(timeout=10)  # reaps it and closes its pipe
    # THEN the worker runs, un-stopped, and serves
    _check_healthy(pid, port, rss_before)
    retry(lambda: psutil.Process(pid).status() == psutil.STATUS_SLEEPING, what="asleep again")


def test_no_safe_thread_falls_back_and_says_so(python_process) -> None:
    # GIVEN a worker whose only thread never blocks in a syscall
    pid = python_process(BUSY).pid
    # WHEN a channel is opened with a short wait for a safe point
    try:
        client, route = channel.open_channel(pid, "gdb", wait_safe=0.5)
    except AttachError as exc:
        # THEN either the fallback is refused for a stated reason (gdb 13 on an AMX CPU) ...
        assert "safe point" in exc.message
        assert psutil.Process(pid).status() == psutil.STATUS_RUNNING
        return
    # ... or memray's breakpoint route took over, and the route says why
    client.close()
    assert route.route == "breakpoints"
    assert route.note is not None and "safe point" in route.note


@pytest.mark.postgres
def test_every_worker_of_the_wedged_lab_is_live_within_five_seconds(
    postgres_dsn: str, tmp_path: Path
) -> None:
    from profiler.lab import wedged

    # GIVEN the lab in held mode, overloaded until every thread of every worker sleeps
    with wedged.lab(2, postgres_dsn) as (lab, pids), wedged.load(lab.url, 40, seconds=45):
        retry(lambda: all(wedged.asleep(pid) for pid in pids), timeout=40, what="wedged")
        for pid in pids:
            # WHEN the task sampler and memray are injected
            started = time.monotonic()
            path = tmp_path / f"tasks-{pid}.jsonl"
            task_inject.inject(pid, path, interval=0.2, duration=10, lease_seconds=None)
            command = [sys.executable, "-m", "profiler.memory.lend", "--pid", str(pid)]
            command += ["--no-lend", "--output", str(tmp_path / f"memray-{pid}.bin")]
            command += ["--duration", "30", "--method", "gdb"]
            attached = subprocess.run(command, capture_output=True, text=True, check=False)
            # THEN both are live within 5 s, through the fast path
            assert attached.returncode == 0, attached.stderr
            assert "breakpoint route" not in attached.stderr
            assert time.monotonic() - started < 5
            assert task_log.read_header(path)["pid"] == pid
            assert still_tracking(pid)  # and detach cleanly
            task_control.request_stop(path)
