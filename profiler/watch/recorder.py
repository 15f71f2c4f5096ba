"""The recorder's loop: sample cheaply, keep the last minutes, open an incident when a rule fires.

Three sampling threads, each at its own low rate (``pg_stat_activity`` with
ownership at 1 Hz, stack dumps at 0.2 Hz, RSS and membership at 1 Hz), feed
one place (:meth:`Recorder._observe`): the ring buffer, the incidents being
written (all but the slow stack dumps: after its trigger an incident's stacks
are its burst's, from the owning workers only), the live rules and the metrics.
A rule's trigger becomes an incident (:mod:`profiler.watch.incident`) unless
its rule is cooling down, the maximum number of incidents was reached, or the
disk budget has no room (:mod:`profiler.watch.retention`); each incident runs
on its own thread.

Workers come and go: a :class:`~profiler.targets.membership.WorkerWatcher`
follows the master's new children and records every exit (with OOM
evidence) in ``DIR/workers.jsonl``; targets are rediscovered now and then for
servers started later.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from profiler.capture.stacks import DumpFailure, StackSample, dump_workers
from profiler.model import Gap, Snapshot, Worker
from profiler.watch import retention
from profiler.watch.burst import DebuggerLocks
from profiler.watch.incident import Buffer, Context, Incident, RssRecord
from profiler.watch.metrics import LiveState
from profiler.watch.ring import Ring
from profiler.watch.rules import LiveRules, Trigger
from profiler.watch.settings import WatchSettings

STATUS = "watch.json"
STATUS_FORMAT = "profiler-watch"
INCIDENT_JOIN_SECONDS = 90.0
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(slots=True)
class RecorderStats:
    snapshots: int = 0
    gaps: int = 0
    stack_rounds: int = 0
    incidents: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # why triggers made no incident
    deleted: list[str] = field(default_factory=list)


class Recorder:
    """Run with :meth:`run` until ``stop`` is set; incidents land in ``root``."""

    def __init__(
        self,
        root: Path,
        dsn: str,
        workers: list[Worker],
        settings: WatchSettings,
        *,
        master_pid: int | None = None,
        rediscover: Callable[[], list[Worker]] | None = None,
        live: LiveState | None = None,
        warn: Say = _quiet,
        info: Say = _quiet,
    ) -> None:
        self.root = root
        self.dsn = dsn
        self.settings = settings
        self.master_pid = master_pid
        self.rediscover = rediscover
        self.live = live if live is not None else LiveState()
        self.live.pool_capacity = settings.rules.pool_capacity
        self.warn, self.info = warn, info
        self.stop = threading.Event()
        self.stats = RecorderStats()
        self.rules = LiveRules(settings.rules)
        self.locks = DebuggerLocks()
        self.workers: dict[int, dict[str, Any]] = {w.pid: _target(w) for w in workers}
        self._limits: dict[int, int | None] = {}
        self._procs: dict[int, psutil.Process] = {}
        seconds = settings.ring_seconds
        self._activity: Ring[Snapshot | Gap] = Ring(seconds)
        self._stacks: Ring[StackSample | DumpFailure] = Ring(seconds)
        self._rss: Ring[RssRecord] = Ring(seconds)
        self._events: Ring[dict[str, Any]] = Ring(seconds)
        self._lock = threading.Lock()
        self._active: list[Incident] = []
        self._threads: list[threading.Thread] = []
        self._incident_threads: list[threading.Thread] = []
        self._last_fired: dict[str, float] = {}
        self._server_version = 0
        self._started_at = datetime.now(timezone.utc)
        self._redacted: str | None = None

    # -- running -----------------------------------------------------------------------------

    def run(self) -> RecorderStats:
        """Sample until :attr:`stop` is set, then close every incident; what happened."""
        from profiler.capture.stacks import resolve_pyspy
        from profiler.pg.dsn import redact
        from profiler.pg.sampler import ActivitySampler
        from profiler.targets.membership import WorkerWatcher

        resolve_pyspy(None)  # exit 5 now, not at the first incident
        self._redacted = redact(self.dsn)
        sampler = ActivitySampler(self.dsn, interval=self.settings.pg_interval, warn=self.warn)
        sampler.open()  # unreachable: exit 4 before anything starts
        self._server_version = sampler.server_version
        self._write_status()
        watcher = WorkerWatcher(self.root / "workers.jsonl", sorted(self.workers), self.master_pid)
        with watcher:
            self._threads = [
                threading.Thread(target=self._pg_loop, args=(sampler,), name="watch-pg"),
                threading.Thread(target=self._stack_loop, name="watch-stacks"),
                threading.Thread(target=self._host_loop, args=(watcher,), name="watch-host"),
            ]
            for thread in self._threads:
                thread.start()
            self.stop.wait()
            for thread in self._threads:
                thread.join(30.0)
            for thread in list(self._incident_threads):
                thread.join(INCIDENT_JOIN_SECONDS)
        sampler.close()
        self._write_status(stopped=True)
        return self.stats

    def _pg_loop(self, sampler: Any) -> None:
        for item in sampler.run(seconds=None, stop=self.stop):
            if isinstance(item, Gap):
                self.stats.gaps += 1
                self.warn(f"pg_stat_activity: sampling gap ({item.reason})")
                self._observe(item.ended_at.timestamp(), activity=item)
                continue
            self.stats.snapshots += 1
            self.live.on_snapshot(item)
            self._observe(item.taken_at.timestamp(), activity=item)
            for trigger in self.rules.on_snapshot(item):
                self._fire(trigger)

    def _stack_loop(self) -> None:
        interval = self.settings.stack_interval
        next_at = time.monotonic()
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += interval
            pids = sorted(self.workers)
            if not pids:
                continue
            samples, failed = dump_workers(pids, nonblocking=True, timeout=max(5.0, interval))
            now = datetime.now(timezone.utc)
            items: list[StackSample | DumpFailure] = list(samples)
            items += [DumpFailure(pid, now, e.message, dropped=False) for pid, e in failed.items()]
            self.stats.stack_rounds += 1
            self._observe(now.timestamp(), stacks=items)
            for trigger in self.rules.on_stacks(samples):
                self._fire(trigger)
            if next_at < time.monotonic():  # fell behind: skip, do not burst
                next_at = time.monotonic() + interval

    def _host_loop(self, watcher: Any) -> None:
        seen_events = 0
        rediscovered = time.monotonic()
        while not self.stop.wait(self.settings.rss_interval):
            for pid in watcher.known:
                if pid not in self.workers:
                    self.workers[pid] = _target_of(pid)
                    self.info(f"following new worker {pid}")
            events = list(watcher.events)
            for event in events[seen_events:]:
                self._observe(float(event["time"]), event=event)
                if event.get("event") == "vanished":
                    self._forget(int(event["pid"]))
                trigger = self.rules.on_worker_event(event, sorted(self.workers), time.time())
                if trigger is not None:
                    self._fire(trigger)
            seen_events = len(events)
            self._sample_rss()
            if self.rediscover is not None and (
                time.monotonic() - rediscovered >= self.settings.rediscover_seconds
            ):
                rediscovered = time.monotonic()
                self._rediscover(watcher)

    def _sample_rss(self) -> None:
        now = time.time()
        current: dict[int, int] = {}
        for pid in sorted(self.workers):
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                rss = int(proc.memory_info().rss)
            except psutil.Error:
                self._observe(now, rss=RssRecord(pid, now, None))
                self._forget(pid)
                continue
            current[pid] = rss
            self._observe(now, rss=RssRecord(pid, now, rss))
            if pid not in self._limits:
                from profiler.targets.oom import memory_limit

                self._limits[pid] = memory_limit(pid)
            for trigger in self.rules.on_rss(pid, now, rss, self._limits[pid]):
                self._fire(trigger)
        self.live.on_rss(current)

    def _rediscover(self, watcher: Any) -> None:
        assert self.rediscover is not None
        try:
            found = self.rediscover()
        except Exception as exc:  # a discovery hiccup must not stop the recorder
            self.warn(f"rediscovering workers failed: {exc}")
            return
        for worker in found:
            if worker.role == "master" or worker.pid in self.workers:
                continue
            if watcher.add(worker.pid):
                self.workers[worker.pid] = _target(worker)
                self.info(f"following new worker {worker.pid}")

    def _forget(self, pid: int) -> None:
        self.workers.pop(pid, None)
        self._procs.pop(pid, None)
        self._limits.pop(pid, None)
        self.rules.forget(pid)

    # -- the one place every observation goes ----------------------------------------------

    def _observe(
        self,
        at: float,
        *,
        activity: Snapshot | Gap | None = None,
        stacks: list[StackSample | DumpFailure] | None = None,
        rss: RssRecord | None = None,
        event: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            if activity is not None:
                self._activity.add(at, activity)
            if stacks is not None:
                for sample in stacks:
                    self._stacks.add(at, sample)
            if rss is not None:
                self._rss.add(at, rss)
            if event is not None:
                self._events.add(at, event)
            for incident in self._active:
                if activity is not None:
                    incident.add_activity(activity)
                if rss is not None:
                    incident.add_rss(rss)
                if event is not None:
                    incident.add_event(event)

    # -- incidents ---------------------------------------------------------------------------

    def _fire(self, trigger: Trigger) -> None:
        settings = self.settings
        with self._lock:
            if self.stop.is_set():
                return
            last = self._last_fired.get(trigger.rule)
            if last is not None and trigger.at - last < settings.cooldown_seconds:
                return  # cooling down: the same trouble, already recorded
            if any(incident.trigger.rule == trigger.rule for incident in self._active):
                return
            if len(self.stats.incidents) >= settings.max_incidents:
                self._skip(trigger, f"the maximum of {settings.max_incidents} incidents is reached")
                return
            keep = {incident.directory for incident in self._active}
            deleted = retention.enforce(
                self.root, settings.max_disk_bytes, keep=keep, reserve=retention.MIN_INCIDENT_BYTES
            )
            self._deleted(deleted)
            why_not = retention.room_for_one(self.root, settings.max_disk_bytes)
            if why_not is not None:
                self._skip(trigger, why_not)
                return
            self._last_fired[trigger.rule] = trigger.at
            incident = Incident(trigger, self._buffer(trigger), self._context(), self.stop)
            self._active.append(incident)
            self.stats.incidents.append(incident.directory.name)
        self.live.on_incident(trigger.rule)
        self.info(f"incident {incident.directory.name}: {trigger.reason}")
        thread = threading.Thread(
            target=self._run_incident, args=(incident,), name=f"incident-{trigger.rule}"
        )
        self._incident_threads.append(thread)
        thread.start()

    def _run_incident(self, incident: Incident) -> None:
        try:
            incident.open()
            self._write_status()
            incident.run(on_burst_end=self._detach)
        except Exception as exc:  # one incident's failure must not stop the recorder
            self.warn(f"incident {incident.directory.name} failed: {type(exc).__name__}: {exc}")
            self._detach(incident)
        deleted = retention.enforce(
            self.root, self.settings.max_disk_bytes, keep={i.directory for i in self._active}
        )
        self._deleted(deleted)
        self._write_status()

    def _detach(self, incident: Incident) -> None:
        with self._lock:
            if incident in self._active:
                self._active.remove(incident)

    def _buffer(self, trigger: Trigger) -> Buffer:
        oldest = [ring.oldest() for ring in (self._activity, self._stacks, self._rss)]
        started = min([t for t in oldest if t is not None], default=trigger.at)
        return Buffer(
            started_at=min(started, trigger.at),
            activity=self._activity.items(),
            stacks=self._stacks.items(),
            rss=self._rss.items(),
            events=self._events.items(),
        )

    def _context(self) -> Context:
        from profiler.session.run import tool_versions

        settings = self.settings

        def over_budget() -> bool:
            return retention.over_budget(self.root, settings.max_disk_bytes)

        return Context(
            root=self.root,
            settings=settings,
            dsn=self._redacted,
            server_version=self._server_version,
            targets=[self.workers[pid] for pid in sorted(self.workers)],
            tools=tool_versions(),
            locks=self.locks,
            over_budget=over_budget,
        )

    def _skip(self, trigger: Trigger, why: str) -> None:
        count = self.stats.skipped.get(why, 0)
        self.stats.skipped[why] = count + 1
        if count == 0:
            self.warn(f"no incident for {trigger.rule}: {why}")

    def _deleted(self, deleted: list[Path]) -> None:
        for path in deleted:
            self.stats.deleted.append(path.name)
            self.info(f"deleted {path.name}: the --max-disk budget")

    # -- the status file -----------------------------------------------------------------------

    def _write_status(self, *, stopped: bool = False) -> None:
        """``DIR/watch.json``: this recorder, its settings and its incidents (atomically)."""
        status = {
            "format": STATUS_FORMAT,
            "version": 1,
            "pid": os.getpid(),
            "started_at": self._started_at.isoformat(),
            "stopped_at": datetime.now(timezone.utc).isoformat() if stopped else None,
            "dsn": self._redacted,
            "settings": _jsonable(asdict(self.settings)),
            "workers": sorted(self.workers),
            "incidents": list(self.stats.incidents),
            "deleted": list(self.stats.deleted),
            "skipped": dict(self.stats.skipped),
        }
        target = self.root / STATUS
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(status, sort_keys=True, indent=2) + "\n")
        os.replace(partial, target)


def _target(worker: Worker) -> dict[str, Any]:
    from profiler.targets.oom import memory_limit

    return {
        "pid": worker.pid,
        "role": worker.role,
        "cmdline": worker.cmdline,
        "memory_limit": memory_limit(worker.pid),
        "container": worker.container,
        "ns_pid": worker.ns_pid,
    }


def _target_of(pid: int) -> dict[str, Any]:
    """A worker found by membership (a replacement): what psutil says of it."""
    from profiler.targets.oom import memory_limit

    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        cmdline = ""
    return {
        "pid": pid,
        "role": "worker",
        "cmdline": cmdline,
        "memory_limit": memory_limit(pid),
        "container": None,
        "ns_pid": pid,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    return value
