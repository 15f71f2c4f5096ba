"""``memray attach`` on every ready worker at once, and ``memray detach`` on all at the end.

A local worker is attached by :mod:`profiler.memory.lend` (``--no-lend``
unless memray is lent), which opens memray's channel through
:mod:`profiler.capture.channel`: memray's library is loaded in milliseconds by a
thread parked in a syscall, also in a wedged worker, where memray's own
breakpoint route waits for a thread to allocate (15-28 s on a real gateway).
Workers are still attached in parallel (each attach is mostly memray's import
and tracker start in the worker, ~1 s).

Every attach carries memray's own ``--duration`` as a safety net, longer
than the window we intend: the worker stops tracking by itself even if this
process is SIGKILLed. At the end of the window (or at Ctrl-C / SIGTERM) we
detach every worker explicitly, which also makes memray finish and close the
capture file before we report on it. The capture is written by the worker
itself, so its directory must be writable by the worker's user.

A worker in other namespaces (a container) is attached from inside them:
``nsenter`` into its mount, PID and network namespaces, then *its* interpreter
runs ``memray attach`` on its in-namespace PID (memray's control channel is a
TCP connection on the worker's loopback, and the injected library must be a
file of its filesystem). The worker writes its capture in a folder of its own
filesystem (``Ready.scratch``); it is fetched through ``/proc/PID/root`` once
detached.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from profiler.capture.processes import is_running
from profiler.memory.preflight import Ready
from profiler.targets.namespaces import fetch

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
    route: str | None = None  # set when memray's breakpoint route was taken: why

    @property
    def pid(self) -> int:
        return self.ready.pid


def attach_command(
    ready: Ready, capture: Path, options: MemOptions, safety_seconds: int
) -> list[str]:
    """The exact ``memray attach`` run for one worker, for ``-v`` and the manifest.

    A worker we lend memray to goes through :mod:`profiler.memory.lend`, which
    takes the same options. A worker in other namespaces gets the same command
    behind ``nsenter``, run by its own interpreter (ours when lent), on its
    in-namespace PID, writing :func:`inside_capture`.
    """
    prefix, python = _runner(ready)
    pid = str(ready.ns_pid)
    if ready.lent or not ready.isolated:
        argv = [*prefix, python, "-m", "profiler.memory.lend", "--pid", pid]
        argv += ["--method", ready.debugger.name] + ([] if ready.lent else ["--no-lend"])
    else:
        argv = [*prefix, python, "-m", "memray", "attach", "--method", ready.debugger.name]
    argv += ["--output", str(inside_capture(ready, capture)), "--duration", str(safety_seconds)]
    flags = {
        "--aggregate": options.aggregate,
        "--native": options.native,
        "--trace-python-allocators": options.trace_python_allocators,
    }
    argv += [flag for flag, wanted in flags.items() if wanted]
    return argv if ready.lent or not ready.isolated else [*argv, pid]


def detach_command(ready: Ready) -> list[str]:
    """The exact ``memray detach`` for one worker (in its namespaces when they are not ours)."""
    prefix, python = _runner(ready)
    if not ready.isolated:
        return [python, "-m", "profiler.memory.lend", "--detach", "--pid", str(ready.pid),
                "--method", ready.debugger.name]  # fmt: skip
    return [*prefix, python, "-m", "memray", "detach", "--method", ready.debugger.name,
            str(ready.ns_pid)]  # fmt: skip


def inside_capture(ready: Ready, capture: Path) -> PurePosixPath | Path:
    """Where the worker writes ``capture``: the same path, or in its scratch folder when it
    has another filesystem (the file is fetched to ``capture`` after detaching)."""
    if ready.scratch is None:
        return capture
    return ready.scratch / capture.name


def _runner(ready: Ready) -> tuple[list[str], str]:
    """The ``nsenter`` prefix and the interpreter that runs memray's client for ``ready``."""
    if not ready.isolated or ready.namespaces is None:
        return [], sys.executable
    return ready.namespaces.enter(), sys.executable if ready.lent else ready.interpreter


def safety_seconds(duration: float | None, workers: int) -> int:
    """memray's own --duration: our window plus time to attach and detach everyone."""
    if duration is None:
        return UNBOUNDED_SAFETY_SECONDS
    return math.ceil(duration) + SAFETY_MARGIN_SECONDS + 2 * workers


def plan_captures(
    ready: Sequence[Ready],
    directory: Path,
    options: MemOptions,
    duration: float | None,
    *,
    stamp: str = "",
) -> list[WorkerCapture]:
    """One capture per ready worker, ``memray-PID.bin`` in ``directory`` (``memray-PID-STAMP.bin``
    with a ``stamp``), its attach command carrying :func:`safety_seconds` for all of them."""
    safety = safety_seconds(duration, len(ready))
    captures = []
    for worker in ready:
        name = f"memray-{worker.pid}-{stamp}.bin" if stamp else f"memray-{worker.pid}.bin"
        capture = directory / name
        command = attach_command(worker, capture, options, safety)
        captures.append(WorkerCapture(ready=worker, capture=capture, command=command))
    return captures


def attach_all(captures: Sequence[WorkerCapture]) -> None:
    """Attach every worker concurrently; each one's status and timing are filled in."""

    def one(worker: WorkerCapture) -> None:
        started = time.monotonic()
        outcome, said = _run(worker.command, worker.ready.memray_env())
        worker.attach_seconds = time.monotonic() - started
        worker.route = next(
            (line.strip() for line in said.splitlines() if "breakpoint route" in line), None
        )
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
        outcome, _ = _run(detach_command(worker.ready), worker.ready.memray_env())
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
    fetch_captures(captures)


def fetch_captures(captures: Sequence[WorkerCapture]) -> None:
    """Copy each capture written in a worker's own filesystem to where we report on it."""
    for worker in captures:
        ready = worker.ready
        if ready.scratch is None or ready.namespaces is None or worker.status == "failed":
            continue
        inside = inside_capture(ready, worker.capture)
        if not fetch(ready.namespaces, inside, worker.capture) and worker.error is None:
            worker.error = (
                f"could not fetch {inside} from the worker's filesystem "
                f"(/proc/{worker.pid}/root{inside}): the worker may have exited"
            )


def still_tracking(pid: int, debugger: str = "gdb", env: dict[str, str] | None = None) -> bool:
    """Ask the worker, through ``memray detach``: False when no attach is active.

    A true answer has a side effect: it detaches. Tests and the doctor use it
    to prove nothing was left behind.
    """
    command = [sys.executable, "-m", "profiler.memory.lend", "--detach", "--pid", str(pid)]
    outcome, _ = _run([*command, "--method", debugger], env)
    return outcome is None


def _run(command: list[str], env: dict[str, str] | None) -> tuple[str | None, str]:
    """None on success, else what the command said (stderr, then stdout); and its stderr."""
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
        verb = next((w for w in command if w in ("attach", "detach")), command[0])
        return f"{verb} did not finish within {ATTACH_TIMEOUT_SECONDS:g}s", ""
    if result.returncode == 0:
        return None, result.stderr
    said = result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}"
    return said, result.stderr


def _attach_failure(pid: int, said: str) -> str:
    if not is_running(pid):
        return f"worker {pid} exited before memray could attach"
    from profiler.capture.gdb_health import HINT, broken_inferior_calls

    broken = broken_inferior_calls()
    if broken is not None:
        return f"memray attach to PID {pid} failed: {broken}; {HINT}"
    return f"memray attach to PID {pid} failed: {_last_line(said)}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
