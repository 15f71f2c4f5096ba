"""``py-spy record`` on every worker at once: started together, stopped together.

One py-spy per worker, each in its own session so a Ctrl-C in the user's
terminal reaches only us: we then stop every py-spy with SIGINT, which makes
py-spy write what it sampled so far, and nothing is lost. Each py-spy writes
collapsed stacks (``--format raw``) straight into the output directory, so a
crash of ours later still leaves them on disk; flamegraphs and speedscope
files are rendered from them (``profiler.capture.cpu_artifacts``).

Blocking mode (py-spy's default) stops every thread of the target for each
sample. On this project's 2-core VM that pause grew with the thread count:
0.1-0.3 ms for one thread, 1.2-3.8 ms at 10 threads, 6-11 ms at 50 and 9-21 ms
at 100, over three runs (``benchmarks/cpu_record.py``) — so 100 Hz stopped a
10-thread worker 12-24% of the time and a 50-thread one 64-87% (py-spy #96,
#872). The model takes the upper end: 0.3 ms plus 0.2 ms per extra thread.
:func:`plan` therefore lowers the blocking rate per worker so the predicted
pause stays under ``max_pause`` of wall time, and switches a worker to
``--nonblocking`` when even 1 Hz would exceed it.

Nonblocking mode does not stop the worker, but py-spy still inspects every
thread on every sample: ~0.11 ms of its own CPU per thread per sample, so 100
Hz on a 12-thread worker costs ~13% of a core (``predicted_cpu``), which on a
saturated host comes out of the gateway's throughput. ``--gil`` samples only
the thread holding the GIL and costs ~2% whatever the thread count.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

import psutil

from profiler import units
from profiler.capture.processes import is_running
from profiler.capture.stacks import diagnose, resolve_pyspy
from profiler.errors import AttachError

# Predicted stop per blocking sample: measured on a 2-core VM (see module docstring).
PAUSE_FIRST_THREAD_SECONDS = 0.3e-3
PAUSE_PER_EXTRA_THREAD_SECONDS = 0.2e-3
# py-spy's own CPU per thread per sample (it checks every thread, idle or not, each
# sample); ``--gil`` reads only the thread holding the GIL. Same VM, py-spy 0.4.
PYSPY_CPU_PER_THREAD_SAMPLE_SECONDS = 0.11e-3
NOTABLE_PYSPY_CPU = 0.05
DEFAULT_MAX_PAUSE = 0.01
STOP_GRACE_SECONDS = 5.0

_SAMPLES = re.compile(r"Samples: (\d+) Errors: (\d+)")


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """What ``cpu record`` passes through to py-spy, plus our pause budget."""

    rate: int = 100
    idle: bool = False
    gil: bool = False
    native: bool = False
    nonblocking: bool = False
    max_pause: float = DEFAULT_MAX_PAUSE


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """How one worker will be sampled; ``reason`` says why it differs from what was asked."""

    pid: int
    threads: int
    rate: int
    nonblocking: bool
    requested_rate: int
    reason: str | None = None

    @property
    def predicted_pause(self) -> float:
        """Fraction of wall time the worker is predicted to be stopped (0 when nonblocking)."""
        return 0.0 if self.nonblocking else self.rate * blocking_pause_seconds(self.threads)

    def predicted_cpu(self, *, gil_only: bool = False) -> float:
        """py-spy's own CPU for this worker, in cores: on a busy host, taken from the gateway."""
        threads = 1 if gil_only else self.threads
        return self.rate * threads * PYSPY_CPU_PER_THREAD_SAMPLE_SECONDS


def blocking_pause_seconds(threads: int) -> float:
    """How long one blocking sample stops a worker with ``threads`` threads (predicted)."""
    return PAUSE_FIRST_THREAD_SECONDS + PAUSE_PER_EXTRA_THREAD_SECONDS * max(threads - 1, 0)


def plan(pids: Sequence[int], options: RecordOptions) -> list[WorkerPlan]:
    """A sampling plan per worker that keeps blocking pauses under ``options.max_pause``.

    ``max_pause <= 0`` disables the guard (the user asked for py-spy's exact rate).
    Raises :class:`AttachError` for a PID that does not exist.
    """
    plans = []
    for pid in dict.fromkeys(pids):
        threads = _threads(pid)
        base = WorkerPlan(pid, threads, options.rate, options.nonblocking, options.rate)
        if options.nonblocking or options.max_pause <= 0:
            plans.append(base)
            continue
        pause = blocking_pause_seconds(threads)
        allowed = int(options.max_pause / pause)
        if allowed >= options.rate:
            plans.append(base)
        elif allowed >= 1:
            plans.append(
                replace(
                    base,
                    rate=allowed,
                    reason=(
                        f"{_threads_text(threads)}: blocking sampling at {options.rate} Hz "
                        f"would stop it ~{units.percent(options.rate * pause, 1)} of the time; "
                        f"sampling at {allowed} Hz"
                    ),
                )
            )
        else:
            plans.append(
                replace(
                    base,
                    nonblocking=True,
                    reason=(
                        f"{_threads_text(threads)}: even 1 Hz blocking would stop it "
                        f"~{units.percent(pause, 1)} of the time; "
                        "sampling without pausing (--nonblocking)"
                    ),
                )
            )
    return plans


@dataclass(slots=True)
class WorkerRecording:
    """One worker's py-spy, while it runs and after.

    ``stopped`` is ``window`` (we stopped it), ``exited`` (the worker died
    mid-capture; what was sampled is kept), ``failed`` (py-spy could not
    attach or crashed; ``error`` says why) or ``killed`` (py-spy ignored
    SIGINT and was killed; its output may be missing).
    """

    plan: WorkerPlan
    collapsed: Path
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    output: IO[bytes] | None = None
    stopped: str = "running"
    ended_after: float | None = None
    samples: int = 0
    errors: int = 0
    error: str | None = None
    said: str = ""
    signalled: bool = False

    @property
    def pid(self) -> int:
        return self.plan.pid

    @property
    def has_stacks(self) -> bool:
        return self.collapsed.is_file() and self.collapsed.stat().st_size > 0


@dataclass(slots=True)
class Recording:
    """Every worker's py-spy of one capture, with the window they shared."""

    workers: list[WorkerRecording]
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    ended_at: float | None = None

    @property
    def running(self) -> list[WorkerRecording]:
        return [worker for worker in self.workers if worker.stopped == "running"]

    def elapsed(self) -> float:
        return time.monotonic() - self.started_monotonic


def record_command(
    pyspy: Path, plan: WorkerPlan, options: RecordOptions, output: Path
) -> list[str]:
    """The exact ``py-spy record`` command for one worker, for ``-v`` and the manifest."""
    argv = [str(pyspy), "record", "--pid", str(plan.pid), "--rate", str(plan.rate)]
    argv += ["--format", "raw", "--output", str(output)]
    flags = {
        "--idle": options.idle,
        "--gil": options.gil,
        "--native": options.native,
        "--nonblocking": plan.nonblocking,
    }
    return argv + [flag for flag, wanted in flags.items() if wanted]


def start(
    plans: Sequence[WorkerPlan],
    options: RecordOptions,
    collapsed_paths: dict[int, Path],
    *,
    pyspy: Path | None = None,
) -> Recording:
    """Start one py-spy per planned worker, back to back, and return at once.

    Raises :class:`ToolMissingError` before starting anything if py-spy is missing.
    """
    resolved = resolve_pyspy(pyspy)
    env = {**os.environ, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}
    workers = [
        WorkerRecording(
            plan=worker_plan,
            collapsed=collapsed_paths[worker_plan.pid],
            command=record_command(
                resolved, worker_plan, options, collapsed_paths[worker_plan.pid]
            ),
        )
        for worker_plan in plans
    ]
    recording = Recording(workers)
    for worker in workers:
        worker.output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _finish
        worker.process = subprocess.Popen(
            worker.command,
            stdin=subprocess.DEVNULL,
            stdout=worker.output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is ours to relay
        )
    return recording


def poll(recording: Recording) -> list[WorkerRecording]:
    """Collect py-spys that ended on their own since the last call (dead worker, failed attach)."""
    ended = []
    for worker in recording.running:
        assert worker.process is not None
        if worker.process.poll() is not None:
            _finish(worker, recording, stopped_by_us=worker.signalled)
            if not worker.signalled:
                ended.append(worker)
    return ended


def wait(
    recording: Recording,
    duration: float | None,
    *,
    tick: Callable[[float, list[WorkerRecording]], None] = lambda elapsed, ended: None,
) -> None:
    """Until ``duration`` seconds from the start (None: until every py-spy has ended).

    Signals py-spys ahead of the end (:func:`signal_ahead`) and collects those
    that end on their own; ``tick(elapsed, ended)`` runs every ~50 ms for a
    countdown and warnings. Ctrl-C (KeyboardInterrupt) reaches the caller,
    which still calls :func:`stop`.
    """
    while recording.running:
        elapsed = recording.elapsed()
        if duration is not None and elapsed >= duration:
            return
        if duration is not None:
            signal_ahead(recording, duration)
        tick(elapsed, poll(recording))
        left = 0.05 if duration is None else min(0.05, max(0.0, duration - elapsed))
        time.sleep(left)


def signal_ahead(recording: Recording, duration: float) -> None:
    """SIGINT each py-spy one sample interval before the window ends.

    py-spy notices SIGINT only when its next sample arrives, up to ``1/rate``
    later (333 ms at the guard's 3 Hz, more on a loaded host), and writes its
    output only then. Signalled one interval early, it takes its last sample at
    the end of the window and exits right after, so the first flamegraph is
    not late by a sample interval.
    """
    elapsed = recording.elapsed()
    for worker in recording.running:
        if not worker.signalled and elapsed >= duration - 1.0 / worker.plan.rate:
            _interrupt(worker)


def stop(
    recording: Recording,
    *,
    grace: float = STOP_GRACE_SECONDS,
    on_done: Callable[[WorkerRecording], None] = lambda worker: None,
) -> None:
    """SIGINT every running py-spy at once (they write their output), then reap them all.

    ``on_done`` runs for each worker as soon as its py-spy is done, quickest
    first (those already done first of all), so their files can be rendered
    while slower py-spys are still finishing a sample.
    """
    recording.ended_at = time.time()
    for worker in recording.workers:
        if worker.stopped != "running":
            on_done(worker)
    running = recording.running
    for worker in running:
        if not worker.signalled:
            _interrupt(worker)
    deadline = time.monotonic() + grace
    while running:
        for worker in list(running):
            assert worker.process is not None
            if worker.process.poll() is not None:
                _finish(worker, recording, stopped_by_us=True)
                running.remove(worker)
                on_done(worker)
        if running and time.monotonic() >= deadline:
            for worker in running:
                assert worker.process is not None
                worker.process.kill()
                worker.process.wait()
                _finish(worker, recording, stopped_by_us=True, killed=True)
                on_done(worker)
            return
        time.sleep(0.005)


def _interrupt(worker: WorkerRecording) -> None:
    assert worker.process is not None
    worker.signalled = True
    with contextlib.suppress(ProcessLookupError):
        worker.process.send_signal(signal.SIGINT)


def _finish(
    worker: WorkerRecording, recording: Recording, *, stopped_by_us: bool, killed: bool = False
) -> None:
    assert worker.process is not None and worker.output is not None
    worker.ended_after = recording.elapsed()
    worker.output.seek(0)
    said = worker.output.read().decode("utf-8", "replace")
    worker.output.close()
    worker.said = said
    counted = _SAMPLES.search(said)
    if counted:
        worker.samples, worker.errors = int(counted[1]), int(counted[2])
    if killed:
        worker.stopped = "killed"
        worker.error = f"py-spy did not stop within {STOP_GRACE_SECONDS:g}s of SIGINT; killed"
    elif "process exited" in said or not is_running(worker.pid):
        # py-spy failing because the worker went (mid-attach, mid-read) is the exit too
        worker.stopped = "exited"
        worker.error = f"worker exited {units.seconds(worker.ended_after, 1)} into the capture"
    elif worker.process.returncode != 0 or not counted:
        worker.stopped = "failed"
        worker.error = diagnose(worker.pid, said, worker.process.returncode).message
    else:
        worker.stopped = "window" if stopped_by_us else "exited"


def _threads_text(threads: int) -> str:
    return f"{threads} thread{'s' * (threads != 1)}"


def _threads(pid: int) -> int:
    try:
        return int(psutil.Process(pid).num_threads())
    except psutil.NoSuchProcess as exc:
        raise AttachError(
            f"no process with PID {pid}", hint="list the workers with `profiler workers`"
        ) from exc
    except psutil.AccessDenied:
        return 1
