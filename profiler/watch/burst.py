"""An incident's burst: what the owning workers are doing, sampled fast for a short time.

Three pieces of the session probes, run on the owning workers only:
nonblocking py-spy dumps at the burst rate (the first within a fraction of a
second of the trigger: no ptrace stop, no debugger), the asyncio task sampler
injected through gdb (what each coroutine holding a connection awaits), and,
on memory rules when asked, memray (:class:`~profiler.session.probes.MemProbe`).

Two debuggers cannot ptrace one process at once: every injection into a
worker takes that worker's lock (:class:`DebuggerLocks`), so two incidents
that fire together take turns instead of failing.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from profiler.capture import task_control, task_inject
from profiler.capture.stacks import DumpFailure, StackSample, periodic_dumps
from profiler.errors import ProfilerError
from profiler.session.manifest import ProbeRecord


class DebuggerLocks:
    """One lock per worker PID, shared by every incident of a recorder."""

    def __init__(self) -> None:
        self._locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def of(self, pid: int) -> threading.Lock:
        with self._guard:
            return self._locks[pid]


class StackBurst:
    """Nonblocking dumps of ``pids`` every ``interval`` until ``stop``, each round handed to
    ``sink`` (the incident's stack log) as it comes."""

    def __init__(
        self,
        pids: Sequence[int],
        interval: float,
        stop: threading.Event,
        sink: Callable[[list[StackSample | DumpFailure]], None],
    ) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.stop = stop
        self.sink = sink
        self.record = ProbeRecord(status="running")
        self.first_at: float | None = None  # epoch of the first sample (trigger latency)
        self._thread = threading.Thread(target=self._run, name="burst-stacks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        samples = failures = 0
        try:
            for item in periodic_dumps(
                self.pids, interval=self.interval, seconds=None, stop=self.stop, nonblocking=True
            ):
                if isinstance(item, DumpFailure):
                    failures += 1
                    self.record.error = f"{failures} failed dump(s), last: {item.reason}"
                else:
                    samples += 1
                    if self.first_at is None:
                        self.first_at = item.taken_at.timestamp()
                self.sink([item])  # written at once: a killed recorder keeps it
        except ProfilerError as exc:
            self.record.status, self.record.error = "failed", exc.message
            return
        self.record.facts.update(samples=samples, failures=failures, pids=self.pids)
        self.record.status = "partial" if self.record.error else "ok"


class TaskBurst:
    """The task sampler in each of ``pids``, into ``directory/tasks/tasks-PID.jsonl``."""

    def __init__(
        self,
        directory: Path,
        pids: Sequence[int],
        interval: float,
        seconds: float,
        locks: DebuggerLocks,
    ) -> None:
        self.directory = directory.resolve()
        self.pids = list(pids)
        self.interval = interval
        self.seconds = seconds
        self.locks = locks
        self.record = ProbeRecord(status="running")
        self.paths = {pid: self.directory / "tasks" / f"tasks-{pid}.jsonl" for pid in self.pids}
        self.sampling: list[int] = []
        self.errors: dict[int, str] = {}
        self._leases: task_control.Leases | None = None

    def start(self) -> None:
        """Inject into every worker at once (each ~0.5-2 s through gdb); returns when done."""
        (self.directory / "tasks").mkdir(exist_ok=True)
        limit = self.seconds + task_control.STOP_SLACK_SECONDS

        def inject(pid: int) -> None:
            try:
                with self.locks.of(pid):
                    task_inject.inject(pid, self.paths[pid], interval=self.interval, duration=limit)
            except ProfilerError as exc:
                self.errors[pid] = exc.message

        with ThreadPoolExecutor(max_workers=min(8, len(self.pids) or 1)) as pool:
            list(pool.map(inject, self.pids))
        self.sampling = [pid for pid in self.pids if pid not in self.errors]
        # A lease: if we die (even SIGKILL), each sampler stops by itself within 30 s.
        self._leases = task_control.Leases([self.paths[pid] for pid in self.sampling]).__enter__()

    def renew(self) -> None:
        if self._leases is not None:
            self._leases.renew()

    def stop(self) -> None:
        for pid in self.sampling:
            task_control.request_stop(self.paths[pid])
        task_control.wait_for_end(
            [self.paths[pid] for pid in self.sampling], timeout=2 * self.interval + 2
        )
        if self._leases is not None:
            self._leases.__exit__(None, None, None)
        self.record.files = [
            str(path.relative_to(self.directory)) for path in self.paths.values() if path.exists()
        ]
        self.record.facts["workers"] = {
            str(pid): self.errors.get(pid, "sampled") for pid in self.pids
        }
        if self.errors:
            self.record.error = "; ".join(f"worker {p}: {why}" for p, why in self.errors.items())
        self.record.status = "failed" if not self.sampling else "partial" if self.errors else "ok"
