"""``memray attach`` on every ready worker at once, and ``memray detach`` on all at the end.

memray injects through a debugger, ~1.5-2 s per worker here (memray #701
reports ~10 s on big hosts), so workers are attached in parallel: the pool
is tracking within one attach time, not N of them.

Every attach carries memray's own ``--duration`` as a safety net, longer
than the window we intend: the worker stops tracking by itself even if this
process is SIGKILLed. At the end of the window (or at Ctrl-C / SIGTERM) we
detach every worker explicitly, which also makes memray finish and close the
capture file before we report on it. The capture is written by the worker
itself, so its directory must be writable by the worker's user.
"""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from profiler.capture.processes import is_running
from profiler.errors import AttachError
from profiler.memory.preflight import Ready

ATTACH_TIMEOUT_SECONDS = 60.0
SAFETY_MARGIN_SECONDS = 30
UNBOUNDED_SAFETY_SECONDS = 3600  # no -d: tracking ends by itself after an hour at most


@dataclass(frozen=True, slots=True)
class MemOptions:
    aggregate: bool = False
    native: bool = False
    trace_python_allocators: bool = False


@dataclass(slots=True)
class WorkerCapture:
    """One worker's capture. ``status``: ``tracking``, ``failed`` (attach did not take;
    ``error`` says why), ``exited`` (the worker died mid-capture; its capture is kept),
    ``done`` (detached at the end)."""

    ready: Ready
    capture: Path
    command: list[str]
    status: str = "pending"
    error: str | None = None
    attach_seconds: float | None = None  # how long memray attach took for this worker
    tracking_since: float | None = None  # wall clock (epoch seconds)
    detached_at: float | None = None

    @property
    def pid(self) -> int:
        return self.ready.pid


def attach_command(
    ready: Ready, capture: Path, options: MemOptions, safety_seconds: int
) -> list[str]:
    """The exact ``memray attach`` run for one worker, for ``-v`` and the manifest.

    A worker we lend memray to goes through :mod:`profiler.memory.lend`, which
    takes the same options.
    """
    if ready.lent:
        argv = [sys.executable, "-m", "profiler.memory.lend", "--pid", str(ready.pid)]
        argv += ["--method", ready.debugger.name]
    else:
        argv = [sys.executable, "-m", "memray", "attach", "--method", ready.debugger.name]
    argv += ["--output", str(capture), "--duration", str(safety_seconds)]
    flags = {
        "--aggregate": options.aggregate,
        "--native": options.native,
        "--trace-python-allocators": options.trace_python_allocators,
    }
    argv += [flag for flag, wanted in flags.items() if wanted]
    return argv if ready.lent else [*argv, str(ready.pid)]


def safety_seconds(duration: float | None, workers: int) -> int:
    """memray's own --duration: our window plus time to attach and detach everyone."""
    if duration is None:
        return UNBOUNDED_SAFETY_SECONDS
    return math.ceil(duration) + SAFETY_MARGIN_SECONDS + 2 * workers


def check_writable(directory: Path, pids: Sequence[int]) -> None:
    """The worker writes its own capture: refuse a directory its user cannot write."""
    try:
        info = directory.stat()
    except OSError as exc:
        raise AttachError(f"cannot use {directory}: {exc.strerror}") from None
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            uids, gids = proc.uids(), proc.gids()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if not _may_write(info, uids.effective, {gids.effective, gids.real}):
            raise AttachError(
                f"worker {pid} (uid {uids.effective}) cannot write its capture into {directory}",
                hint="pass -o a directory that user can write (e.g. mkdir -m 1777 DIR)",
            )


def attach_all(captures: Sequence[WorkerCapture]) -> None:
    """Attach every worker concurrently; each one's status and timing are filled in."""

    def one(worker: WorkerCapture) -> None:
        started = time.monotonic()
        outcome = _run(worker.command, worker.ready.memray_env())
        worker.attach_seconds = time.monotonic() - started
        if outcome is None:
            worker.status = "tracking"
            worker.tracking_since = time.time()
        else:
            worker.status = "failed"
            worker.error = _attach_failure(worker.pid, outcome)

    with ThreadPoolExecutor(max_workers=max(1, min(len(captures), 32))) as pool:
        list(pool.map(one, captures))


def detach_all(captures: Sequence[WorkerCapture]) -> None:
    """Detach every worker still tracking, concurrently; mark those that died instead."""

    def one(worker: WorkerCapture) -> None:
        if worker.status != "tracking":
            return
        if not is_running(worker.pid):
            worker.status = "exited"
            worker.error = "worker exited during the capture; its capture is kept"
            return
        command = [sys.executable, "-m", "memray", "detach", "--method"]
        command += [worker.ready.debugger.name, str(worker.pid)]
        outcome = _run(command, worker.ready.memray_env())
        worker.detached_at = time.time()
        if outcome is None or "no previous `memray attach`" in outcome:
            worker.status = "done"  # detached now, or memray's own --duration already had
        elif not is_running(worker.pid):
            worker.status = "exited"
            worker.error = "worker exited during the capture; its capture is kept"
        else:
            worker.status = "done"
            worker.error = f"memray detach said: {_last_line(outcome)}"

    with ThreadPoolExecutor(max_workers=max(1, min(len(captures), 32))) as pool:
        list(pool.map(one, captures))


def still_tracking(pid: int, debugger: str = "gdb", env: dict[str, str] | None = None) -> bool:
    """Ask the worker, through ``memray detach``: False when no attach is active.

    A true answer has a side effect: it detaches. Tests and the doctor use it
    to prove nothing was left behind.
    """
    command = [sys.executable, "-m", "memray", "detach", "--method", debugger, str(pid)]
    outcome = _run(command, env)
    return outcome is None


def _run(command: list[str], env: dict[str, str] | None) -> str | None:
    """None on success, else what the command said (stderr, then stdout)."""
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=ATTACH_TIMEOUT_SECONDS,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return f"{command[3]} did not finish within {ATTACH_TIMEOUT_SECONDS:g}s"
    if result.returncode == 0:
        return None
    return result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}"


def _attach_failure(pid: int, said: str) -> str:
    if not is_running(pid):
        return f"worker {pid} exited before memray could attach"
    return f"memray attach to PID {pid} failed: {_last_line(said)}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _may_write(info: os.stat_result, uid: int, gids: set[int]) -> bool:
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IWUSR)
    if info.st_gid in gids:
        return bool(info.st_mode & stat.S_IWGRP)
    return bool(info.st_mode & stat.S_IWOTH)
