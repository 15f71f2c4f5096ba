"""An incident on disk: a session folder with the recorder's buffer prepended and the burst.

Written incrementally, in the session format (:mod:`profiler.session`): the
manifest first (``ended_at`` null, ``incident.state: recording``), then each
file opened with the buffer's contents and appended to as the burst and the
recorder's own sampling go on, every line flushed. So ``session show`` reads
an incident while it is written, and one whose recorder was killed (even
SIGKILL) keeps every complete line; the reader drops a torn last line. At the
end the activity is copied to Parquet and the manifest rewritten (atomically)
with its end.

Files: ``activity.jsonl`` (+ ``.parquet`` once complete), ``stacks.jsonl``,
``rss.jsonl``, ``workers.jsonl``, ``tasks/tasks-PID.jsonl``, ``mem/`` (memray,
with ``--mem-on``), ``manifest.json`` with an ``incident`` object (the
reference, ``docs/reference/watch.md``, lists its fields).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from profiler import jsonl
from profiler.capture.stack_log import StackLogWriter
from profiler.capture.stacks import DumpFailure, StackSample
from profiler.memory import rss as rss_log
from profiler.model import Gap, Snapshot
from profiler.pg.recording import RecordingWriter
from profiler.session.manifest import Manifest, ProbeRecord, SessionSettings
from profiler.targets import membership
from profiler.watch.burst import DebuggerLocks, StackBurst, TaskBurst
from profiler.watch.rules import Trigger
from profiler.watch.settings import WatchSettings

PREFIX = "incident-"
RECORDING, COMPLETE = "recording", "complete"


@dataclass(frozen=True, slots=True)
class RssRecord:
    """One line of ``rss.jsonl``: a worker's RSS, or its exit (``rss`` None)."""

    pid: int
    at: float
    rss: int | None

    def to_json(self) -> dict[str, Any]:
        taken_at = datetime.fromtimestamp(self.at, timezone.utc).isoformat()
        if self.rss is None:
            return {"kind": "exit", "pid": self.pid, "taken_at": taken_at}
        return {"kind": "rss", "pid": self.pid, "taken_at": taken_at, "rss": self.rss}


@dataclass(frozen=True, slots=True)
class Buffer:
    """The recorder's ring at the trigger: what led up to it."""

    started_at: float
    activity: list[Snapshot | Gap]
    stacks: list[StackSample | DumpFailure]
    rss: list[RssRecord]
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Context:
    """What every incident of one recorder shares."""

    root: Path
    settings: WatchSettings
    dsn: str | None  # redacted
    server_version: int
    targets: list[dict[str, Any]]
    tools: dict[str, str | None]
    locks: DebuggerLocks = field(default_factory=DebuggerLocks)
    over_budget: Callable[[], bool] = lambda: False


def folder_name(trigger: Trigger) -> str:
    """``incident-<UTC>-<rule>``: names sort in time order, which retention relies on."""
    stamp = datetime.fromtimestamp(trigger.at, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{PREFIX}{stamp}-{trigger.rule}"


class Incident:
    """One incident: :meth:`open` writes the buffer, :meth:`run` bursts and closes.

    The recorder feeds it (:meth:`add_activity`, :meth:`add_stacks`, ...) what it
    samples while the incident is open; items fed before :meth:`open` finished
    are kept and written right after the buffer.
    """

    def __init__(
        self, trigger: Trigger, buffer: Buffer, context: Context, stop: threading.Event
    ) -> None:
        self.trigger = trigger
        self.buffer = buffer
        self.context = context
        self.settings = context.settings
        self.directory = context.root / folder_name(trigger)
        self.recorder_stop = stop
        self.burst_stop = threading.Event()
        self.pids = [pid for pid in trigger.pids if _alive(pid)]
        self.error: str | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []
        self._opened = False
        self._closed = False
        self._activity: RecordingWriter | None = None
        self._stacks: StackLogWriter | None = None
        self._rss: jsonl.JsonlWriter | None = None
        self._events: jsonl.JsonlWriter | None = None
        self._stack_burst: StackBurst | None = None
        self._task_burst: TaskBurst | None = None
        self._mem: Any = None
        self.probes: dict[str, ProbeRecord] = {}
        self.manifest = self._manifest()

    # -- fed by the recorder ----------------------------------------------------------------

    def add_activity(self, item: Snapshot | Gap) -> None:
        self._feed("activity", item)

    def add_stacks(self, items: Sequence[StackSample | DumpFailure]) -> None:
        self._feed("stacks", list(items))

    def add_rss(self, record: RssRecord) -> None:
        self._feed("rss", record)

    def add_event(self, event: dict[str, Any]) -> None:
        self._feed("event", event)

    def _feed(self, kind: str, item: Any) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._opened:
                self._pending.append((kind, item))
                return
            self._write(kind, item)

    def _write(self, kind: str, item: Any) -> None:
        if kind == "activity" and self._activity is not None:
            self._activity.add(item)
            counter = "gaps" if isinstance(item, Gap) else "snapshots"
            facts = self.probes["pg"].facts
            facts[counter] = facts.get(counter, 0) + 1
        elif kind == "stacks" and self._stacks is not None:
            for sample in item:
                self._stacks.add(sample)
        elif kind == "rss" and self._rss is not None:
            self._rss.write(item.to_json())
        elif kind == "event" and self._events is not None:
            self._events.write(item)

    # -- the incident's life -------------------------------------------------------------------

    def open(self) -> None:
        """The folder, the manifest, the buffer; the stack burst started at once."""
        self.directory.mkdir(parents=True)
        self.manifest.write(self.directory)
        with self._lock:
            header = {"interval": self.settings.burst_interval, "pids": self.pids}
            self._stacks = StackLogWriter(
                self.directory / "stacks.jsonl", {**header, "nonblocking": True}
            ).__enter__()
            for sample in self.buffer.stacks:
                self._stacks.add(sample)
        if self.pids:
            self._stack_burst = StackBurst(
                self.pids, self.settings.burst_interval, self.burst_stop, self.add_stacks
            )
            self._stack_burst.start()
        with self._lock:
            self.probes["pg"] = ProbeRecord("running", files=["activity.jsonl"])
            self.probes["pg"].facts["server_version"] = self.context.server_version
            self._activity = RecordingWriter(
                self.directory / "activity.jsonl",
                {
                    "dsn": self.context.dsn,
                    "interval": self.settings.pg_interval,
                    "server_version": self.context.server_version,
                },
            ).__enter__()
            for item in self.buffer.activity:
                self._write("activity", item)
            self._rss = jsonl.JsonlWriter(
                self.directory / "rss.jsonl",
                rss_log.FORMAT,
                rss_log.VERSION,
                {"interval": self.settings.rss_interval, "pids": self._target_pids()},
            ).__enter__()
            for record in self.buffer.rss:
                self._rss.write(record.to_json())
            self._events = jsonl.JsonlWriter(
                self.directory / "workers.jsonl",
                membership.FORMAT,
                membership.VERSION,
                {"initial": self._target_pids(), "master_pid": None},
            ).__enter__()
            for event in self.buffer.events:
                self._events.write(event)
            self._opened = True
            for kind, item in self._pending:
                self._write(kind, item)
            self._pending.clear()
        self.probes["stacks"] = ProbeRecord("running", files=["stacks.jsonl"])
        self.probes["rss"] = ProbeRecord("running", files=["rss.jsonl"])
        self.probes["workers"] = ProbeRecord("running", files=["workers.jsonl"])

    def run(self, on_burst_end: Callable[[Incident], None]) -> None:
        """Burst for ``burst_seconds`` (less when the recorder stops or the disk budget is
        spent), then close. ``on_burst_end`` runs before the files close: the recorder
        stops feeding this incident there."""
        started = time.monotonic()
        try:
            if self.pids and self.settings.tasks:
                self._task_burst = TaskBurst(
                    self.directory,
                    self.pids,
                    self.settings.burst_interval,
                    self.settings.burst_seconds,
                    self.context.locks,
                )
                self._task_burst.start()  # before memray: one debugger at a time
            if self.pids:
                self._start_mem()
            while not self.recorder_stop.wait(0.5):
                if time.monotonic() - started >= self.settings.burst_seconds:
                    break
                if self.context.over_budget():
                    self.error = "cut short: the --max-disk budget is spent"
                    break
                if self._task_burst is not None:
                    self._task_burst.renew()
        finally:
            self.burst_stop.set()
            self._stop_bursts()
            on_burst_end(self)
            self.close()

    def _start_mem(self) -> None:
        if self.trigger.rule not in self.settings.mem_on:
            return
        from profiler.session.probes import MemProbe

        ready = threading.Event()
        ready.set()  # the task sampler's injection is done: the debugger is free
        settings = SessionSettings(duration=self.settings.burst_seconds, mem=True)
        self._mem = MemProbe(self.directory, self.burst_stop, self.pids, settings, ready)
        self._mem.start()

    def _stop_bursts(self) -> None:
        if self._stack_burst is not None:
            self._stack_burst.join(10.0)
            self.probes["burst"] = self._stack_burst.record
        if self._task_burst is not None:
            self._task_burst.stop()
            self.probes["tasks"] = self._task_burst.record
        if self._mem is not None:
            self._mem.join(60.0)
            self.probes["mem"] = self._mem.record

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for writer in (self._activity, self._stacks, self._rss, self._events):
                if writer is not None:
                    writer.__exit__(None, None, None)
        for name in ("pg", "stacks", "rss", "workers"):
            if name in self.probes and self.probes[name].status == "running":
                self.probes[name].status = "ok"
        self._columnar()
        self.manifest.ended_at = datetime.now(timezone.utc)
        self.manifest.interrupted = self.recorder_stop.is_set() or self.error is not None
        self.manifest.settings.duration = round(
            self.manifest.ended_at.timestamp() - self.buffer.started_at, 3
        )
        self.manifest.probes = dict(self.probes)
        self.manifest.extra["incident"].update(self._facts(COMPLETE))
        self.manifest.write(self.directory)

    def _columnar(self) -> None:
        """activity.jsonl -> activity.parquet (a few MB at most: the buffer and the burst)."""
        from profiler.session import activity_table

        pg = self.probes.get("pg")
        source = self.directory / activity_table.JSONL_NAME
        if pg is None or not source.exists():
            return
        try:
            rows = activity_table.convert(source, self.directory / activity_table.PARQUET_NAME)
        except Exception as exc:  # the JSONL is still there and readable
            pg.error = f"columnar copy failed: {exc}"
            pg.status = "partial"
            return
        pg.files.append(activity_table.PARQUET_NAME)
        pg.facts["rows"] = rows

    # -- the manifest ------------------------------------------------------------------------

    def _manifest(self) -> Manifest:
        rules = self.settings.rules
        settings = SessionSettings(
            duration=None,
            pg_interval=self.settings.pg_interval,
            dump_interval=self.settings.burst_interval,
            rss_interval=self.settings.rss_interval,
            cpu=False,
            mem=self.trigger.rule in self.settings.mem_on,
            tasks=self.settings.tasks,
            task_interval=self.settings.burst_interval,
            pool_capacity=rules.pool_capacity,
        )
        return Manifest(
            name=self.directory.name,
            started_at=datetime.fromtimestamp(self.buffer.started_at, timezone.utc),
            settings=settings,
            dsn=self.context.dsn,
            targets=self.context.targets,
            tools=self.context.tools,
            extra={"incident": {**self.trigger.to_json(), **self._facts(RECORDING)}},
        )

    def _facts(self, state: str) -> dict[str, Any]:
        first = None if self._stack_burst is None else self._stack_burst.first_at
        return {
            "state": state,
            "burst_pids": self.pids,
            "burst_seconds": self.settings.burst_seconds,
            "burst_interval": self.settings.burst_interval,
            "buffer_started_at": round(self.buffer.started_at, 6),
            "buffer_seconds": round(self.trigger.at - self.buffer.started_at, 3),
            "first_stack_at": None if first is None else round(first, 6),
            "latency_seconds": None if first is None else round(first - self.trigger.at, 3),
            "recorder_pid": os.getpid(),
            "error": self.error,
        }

    def _target_pids(self) -> list[int]:
        return [int(t["pid"]) for t in self.context.targets]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True
