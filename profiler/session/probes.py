"""The probes of a session: each captures one kind of evidence into the session folder.

Every probe starts, runs on its own thread (or its tool's processes) and stops
when the session's stop event is set. A probe that fails records why in its
:class:`ProbeRecord` and ends; the others go on: a database restart must not
cost the stacks, and a worker that dies must not cost the database.

py-spy runs nonblocking in sessions, for dumps and records alike: two tracers
cannot ptrace one process at once, so a blocking dump would fail whenever
``cpu record`` or memray's attach held the worker; nonblocking reads need no
ptrace stop and never pause the worker.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from profiler import units
from profiler.errors import ProfilerError
from profiler.session.manifest import ProbeRecord, SessionSettings, now

DEBUGGER_WAIT_SECONDS = 60.0


class Probe(abc.ABC):
    """One kind of evidence. Subclasses implement :meth:`capture` (runs until ``stop``)."""

    name = "probe"
    attaches = False  # True: live only once injected into the workers (it calls mark_live)

    def __init__(self, directory: Path, stop: threading.Event) -> None:
        self.directory = directory
        self.stop_event = stop
        self.record = ProbeRecord()
        self.live = threading.Event()  # set when it captures, or has given up (degraded)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.record.status = "running"
        self._thread = threading.Thread(target=self._guarded, name=f"probe-{self.name}")
        self._thread.start()
        if not self.attaches:
            self.mark_live()

    def mark_live(self) -> None:
        """The session's window may start as far as this probe is concerned."""
        if not self.live.is_set():
            self.record.live_at = now().isoformat()
            self.live.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def progress(self) -> str:
        return self.name

    @abc.abstractmethod
    def capture(self) -> None:
        """Capture into ``directory`` until ``stop_event`` is set; raise ProfilerError to fail."""

    def _guarded(self) -> None:
        try:
            self.capture()
        except ProfilerError as exc:
            self.record.status, self.record.error = "failed", exc.message
        except Exception as exc:  # one probe's bug must not end the others
            self.record.status, self.record.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            if self.record.status == "running":
                self.record.status = "partial" if self.record.error else "ok"
        finally:
            self.live.set()  # a probe that failed before going live must not hold the window


class PgProbe(Probe):
    """pg_stat_activity with ownership, every ``pg_interval``, into ``activity.jsonl``."""

    name = "pg"

    def __init__(
        self,
        directory: Path,
        stop: threading.Event,
        dsn: str,
        interval: float,
        warn: Callable[[str], None],
        *,
        pgbouncer: str | None = None,
    ) -> None:
        super().__init__(directory, stop)
        self.dsn = dsn
        self.pgbouncer = pgbouncer  # the admin console's DSN: never written anywhere
        self.interval = interval
        self.warn = warn
        self.snapshots = 0
        self.gaps = 0
        self.idle_in_transaction = 0
        self.oldest_idle = 0.0

    def capture(self) -> None:
        from profiler.analysis.activity import idle_in_transaction
        from profiler.model import Gap
        from profiler.pg.dsn import redact
        from profiler.pg.recording import RecordingWriter
        from profiler.pg.sampler import ActivitySampler

        sampler = ActivitySampler(
            self.dsn, interval=self.interval, warn=self.warn, pgbouncer=self.pgbouncer
        )
        sampler.open()
        path = self.directory / "activity.jsonl"
        self.record.files.append(path.name)
        self.record.facts["server_version"] = sampler.server_version
        header = {"dsn": redact(self.dsn), "interval": self.interval}
        try:
            with RecordingWriter(path, {**header, "server_version": sampler.server_version}) as out:
                for item in sampler.run(seconds=None, stop=self.stop_event):
                    out.add(item)
                    if isinstance(item, Gap):
                        self.gaps += 1
                        self.record.error = f"{self.gaps} sampling gap(s), last: {item.reason}"
                        continue
                    self.snapshots += 1
                    idle = idle_in_transaction(item)
                    self.idle_in_transaction = len(idle)
                    ages = [b.state_age_seconds or 0.0 for b in idle]
                    self.oldest_idle = max(ages, default=0.0)
        finally:
            sampler.close()
        self.record.facts.update(snapshots=self.snapshots, gaps=self.gaps)

    def progress(self) -> str:
        idle = f", {self.idle_in_transaction} idle in tx" if self.idle_in_transaction else ""
        oldest = (
            f" (oldest {units.seconds(self.oldest_idle, 0)})" if self.idle_in_transaction else ""
        )
        return f"pg {self.snapshots} snapshots{idle}{oldest}"


class WorkerSamplingProbe(Probe):
    """A probe that looks at every worker every ``interval`` seconds."""

    def __init__(
        self, directory: Path, stop: threading.Event, pids: list[int], interval: float
    ) -> None:
        super().__init__(directory, stop)
        self.pids = pids
        self.interval = interval


class StacksProbe(WorkerSamplingProbe):
    """py-spy dump of every worker every ``dump_interval``, stamped, into ``stacks.jsonl``."""

    name = "stacks"
    samples = 0  # counters, bumped by the capture thread, read by progress()
    failures = 0

    def capture(self) -> None:
        from profiler.capture.stack_log import StackLogWriter
        from profiler.capture.stacks import DumpFailure, periodic_dumps

        path = self.directory / "stacks.jsonl"
        self.record.files.append(path.name)
        header = {"interval": self.interval, "pids": self.pids, "nonblocking": True}
        with StackLogWriter(path, header) as log:
            for item in periodic_dumps(
                self.pids,
                interval=self.interval,
                seconds=None,
                stop=self.stop_event,
                nonblocking=True,
            ):
                log.add(item)
                if isinstance(item, DumpFailure):
                    self.failures += 1
                    self.record.error = f"{self.failures} failed dump(s), last: {item.reason}"
                else:
                    self.samples += 1
        self.record.facts.update(samples=self.samples, failures=self.failures)

    def progress(self) -> str:
        return f"stacks {self.samples} thread samples"


class RssProbe(WorkerSamplingProbe):
    """Every worker's RSS every ``rss_interval`` into ``rss.jsonl``."""

    name = "rss"
    exited: frozenset[int] | set[int] = frozenset()  # the sampler's set, once it runs

    def capture(self) -> None:
        from profiler.memory.rss import RssSampler

        path = self.directory / "rss.jsonl"
        self.record.files.append(path.name)
        with RssSampler(path, self.pids, self.interval) as sampler:
            self.exited = sampler.exited
            self.stop_event.wait()
        self.record.facts.update(
            peak_bytes={str(pid): peak for pid, peak in sampler.peaks.items()},
            exited=sorted(sampler.exited),
        )
        if sampler.exited:
            self.record.error = f"worker(s) exited: {', '.join(map(str, sorted(sampler.exited)))}"

    def progress(self) -> str:
        gone = f", {len(self.exited)} exited" if self.exited else ""
        return f"rss {len(self.pids)} workers{gone}"


class CpuProbe(Probe):
    """``cpu record --idle --nonblocking`` on every worker, flamegraphs into ``cpu/``."""

    name = "cpu"

    def __init__(self, directory: Path, stop: threading.Event, pids: list[int], rate: int) -> None:
        super().__init__(directory, stop)
        self.pids = pids
        self.rate = rate

    def capture(self) -> None:
        from profiler.capture import record as recorder
        from profiler.session.cpu_record import ArtifactWriter, artifact_paths, describe, stamp

        out = self.directory / "cpu"
        out.mkdir(exist_ok=True)
        # --idle: a wall-clock profile. A worker stuck waiting for a pool connection is
        # idle to py-spy, and that wait is the evidence a session is after.
        options = recorder.RecordOptions(rate=self.rate, idle=True, nonblocking=True)
        plans = recorder.plan(self.pids, options)
        paths = artifact_paths(out, [p.pid for p in plans], stamp(time.time()))
        cmdlines = {p.pid: describe(p.pid) for p in plans}
        recording = recorder.start(
            plans, options, {p: f.collapsed for p, f in paths.workers.items()}
        )
        self.stop_event.wait()
        writer = ArtifactWriter(recording, paths, options, cmdlines)
        recorder.stop(recording, on_done=writer.worker_done)
        manifest = writer.finish(interrupted=False)
        self.record.files = [
            str(path.relative_to(self.directory)) for path in paths.all() if path.exists()
        ]
        failed = [w for w in manifest["workers"] if w["status"] != "window"]
        if failed:
            self.record.error = "; ".join(
                f"worker {w['pid']}: {w['error'] or w['status']}" for w in failed
            )
        if manifest["merged"] is None and len(failed) == len(manifest["workers"]):
            raise ProfilerError(self.record.error or "py-spy could not sample any worker")

    def progress(self) -> str:
        return f"cpu py-spy on {len(self.pids)} workers"


class MemProbe(Probe):
    """memray on every ready worker into ``mem/``, attached first, detached at the end."""

    name = "mem"
    attaches = True

    def __init__(
        self,
        directory: Path,
        stop: threading.Event,
        pids: list[int],
        settings: SessionSettings,
        debugger_free: threading.Event,
    ) -> None:
        super().__init__(directory, stop)
        self.pids = pids
        self.settings = settings
        self.debugger_free = debugger_free
        self.tracking = 0

    def capture(self) -> None:
        from profiler.memory import preflight
        from profiler.memory.attach import MemOptions, attach_all, detach_all, plan_captures

        out = self.directory / "mem"
        out.mkdir(exist_ok=True)
        out = out.resolve()
        self.debugger_free.wait(DEBUGGER_WAIT_SECONDS)  # the task sampler injects first
        ready, failed = preflight.check_all(self.pids, lend=self.settings.lend_memray)
        errors = [f"worker {pid}: {error.message}" for pid, error in failed.items()]
        options = MemOptions(self.settings.mem_aggregate, self.settings.mem_native)
        captures = plan_captures(ready, out, options, self.settings.duration)
        try:
            attach_all(captures)
            self.tracking = sum(c.status == "tracking" for c in captures)
            self.record.facts["attach_seconds"] = {
                str(c.pid): None if c.attach_seconds is None else round(c.attach_seconds, 3)
                for c in captures
            }
            self.mark_live()
            self.stop_event.wait()
        finally:
            detach_all(captures)
        errors += [f"worker {c.pid}: {c.error}" for c in captures if c.error]
        errors += self._record_peaks([c.capture for c in captures if c.capture.exists()])
        self.record.files = [
            str(path.relative_to(self.directory))
            for c in captures
            for path in (c.capture, c.capture.with_name(f"peak-{c.pid}.json"))
            if path.exists()
        ]
        self.record.facts["workers"] = {str(c.pid): c.status for c in captures}
        if errors:
            self.record.error = "; ".join(errors)
        if not self.record.files:
            raise ProfilerError(self.record.error or "memray captured nothing")

    def _record_peaks(self, captures: list[Path]) -> list[str]:
        """Each capture's peak stacks for the Diagnosis (:mod:`profiler.session.memory_peaks`);
        the errors of those that could not be read."""
        from profiler.session.memory_peaks import record_peak

        errors = []
        for capture in captures:
            written = record_peak(capture, self.directory / "tasks")
            if written.error is not None:
                errors.append(f"peak of {capture.name}: {written.error}")
        return errors

    def progress(self) -> str:
        return f"mem {self.tracking} tracking"


class TasksProbe(WorkerSamplingProbe):
    """The asyncio task sampler injected into every worker, into ``tasks/tasks-PID.jsonl``.

    Injection goes through a debugger (gdb), as memray's attach does, so it runs
    before memray attaches (``debugger_free`` is set once every injection is
    done): two debuggers cannot ptrace one process at once. The sampler stops
    itself at the session's end (stop file), and if we die, at its lease's end.
    """

    name = "tasks"
    attaches = True

    # Opens like MemProbe's on purpose: both attach a debugger to the same workers and
    # share one ``debugger_free`` event (set here, waited on there).
    def __init__(
        self,
        directory: Path,
        stop: threading.Event,
        pids: list[int],
        interval: float,
        duration: float | None,
        debugger_free: threading.Event,
    ) -> None:
        super().__init__(directory, stop, pids, interval)
        self.duration = duration
        self.debugger_free = debugger_free
        self.sampling: list[int] = []

    def capture(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from profiler.capture import task_control, task_inject
        from profiler.capture.task_visibility import blind_spot, saw_no_task

        out = self.directory / "tasks"
        out.mkdir(exist_ok=True)
        paths = {pid: out.resolve() / f"tasks-{pid}.jsonl" for pid in self.pids}
        limit = (self.duration or task_control.UNBOUNDED_SECONDS) + task_control.STOP_SLACK_SECONDS
        errors: dict[int, str] = {}
        routes: dict[str, str] = {}

        def inject(pid: int) -> None:
            blind = blind_spot(pid)
            if blind is not None:
                errors[pid] = blind
                return
            try:
                routes[str(pid)] = task_inject.inject(
                    pid, paths[pid], interval=self.interval, duration=limit
                )
            except ProfilerError as exc:
                errors[pid] = exc.message

        try:
            with ThreadPoolExecutor(max_workers=min(8, len(self.pids) or 1)) as pool:
                list(pool.map(inject, self.pids))
        finally:
            self.debugger_free.set()
        self.sampling = [pid for pid in self.pids if pid not in errors]
        self.record.facts["routes"] = routes  # fast, or why memray's breakpoint route
        self.mark_live()
        with task_control.Leases([paths[pid] for pid in self.sampling]) as leases:
            while not self.stop_event.wait(task_control.LEASE_RENEW_SECONDS):
                leases.renew()
        for pid in self.sampling:
            task_control.request_stop(paths[pid])
        task_control.wait_for_end(
            [paths[pid] for pid in self.sampling], timeout=2 * self.interval + 2
        )
        self.record.files = [
            str(path.relative_to(self.directory.resolve()))
            for path in paths.values()
            if path.exists()
        ]
        self.record.facts["workers"] = {str(pid): errors.get(pid, "sampled") for pid in self.pids}
        empty = [pid for pid in self.sampling if saw_no_task(paths[pid])]
        if empty:  # said by `session run`: no asyncio loop there, or tasks asyncio never sees
            self.record.facts["no_task_seen"] = empty
        if errors:
            self.record.error = "; ".join(f"worker {pid}: {why}" for pid, why in errors.items())
        if not self.sampling:
            raise ProfilerError(self.record.error or "the task sampler ran in no worker")

    def progress(self) -> str:
        return f"tasks in {len(self.sampling)} workers"


class WorkersProbe(Probe):
    """Which workers vanished (and whether the OOM killer took them), which replaced them."""

    name = "workers"

    def __init__(
        self, directory: Path, stop: threading.Event, pids: list[int], master_pid: int | None
    ) -> None:
        super().__init__(directory, stop)
        self.pids = pids
        self.master_pid = master_pid
        self.vanished = 0

    def capture(self) -> None:
        from profiler.targets.membership import WorkerWatcher

        path = self.directory / "workers.jsonl"
        self.record.files.append(path.name)
        with WorkerWatcher(path, self.pids, self.master_pid) as watcher:
            while not self.stop_event.wait(0.5):
                self.vanished = sum(e["event"] == "vanished" for e in watcher.events)
        events = watcher.events
        vanished = [e for e in events if e["event"] == "vanished"]
        self.record.facts.update(
            vanished=[e["pid"] for e in vanished],
            appeared=[e["pid"] for e in events if e["event"] == "appeared"],
        )
        if vanished:
            self.record.error = "worker(s) vanished: " + ", ".join(
                f"{e['pid']} ({e['exit']})" for e in vanished
            )

    def progress(self) -> str:
        return f"{self.vanished} vanished" if self.vanished else "workers steady"


def probe_summary(probes: list[Probe]) -> dict[str, Any]:
    return {probe.name: probe.record for probe in probes}
