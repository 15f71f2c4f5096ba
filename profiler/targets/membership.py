"""Which workers came and went during a session, how they went, and who replaced them.

A gateway's master (gunicorn's arbiter, uvicorn's supervisor) replaces a worker
that died: the OOM killer's victim is gone within a second and a new PID
serves in its place. :class:`WorkerWatcher` checks on a background thread
every ``interval`` seconds which watched workers are gone (or zombies) and
which new children the master forked, and appends events
(:mod:`profiler.jsonl`) as it goes::

    {"kind": "header", "format": "profiler-worker-events", "version": 1,
     "initial": [1234, 1235], "master_pid": 1200, "kernel_log": "kmsg",
     "kernel_log_problem": null}
    {"time": 1718000000.5, "pid": 1301, "event": "appeared"}
    {"time": 1718000000.1, "pid": 1234, "event": "vanished", "exit": "oom-killed",
     "oom_evidence": "kernel: Memory cgroup out of memory: Killed process 1234 ...",
     "cgroup": "/sys/fs/cgroup/...", "replacement_pid": 1301, "returncode": -9}
    {"time": ..., "pid": 1200, "event": "master-vanished", "exit": ..., ...}

``time`` is when the watcher saw it (epoch seconds). A vanished worker is
written once its replacement is known: the master's next new child, paired
with the nearest vanish within ``replacement_window`` seconds, whichever of
the two we saw first; with no master (or once it is gone) it is written at
once with ``replacement_pid`` null. New workers join :attr:`WorkerWatcher.known`,
which other probes read to follow the replacements.

Each worker's cgroup is read when it is first seen, because after its death
``/proc/PID`` is gone; the kernel log window opens when the watcher starts
(:mod:`profiler.targets.oom`). We are not the workers' parent, so their exit
status is only known when we catch them as zombies, before the master reaps
them (``/proc/PID/stat`` field 52); ``returncode`` is null otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from profiler import jsonl
from profiler.targets import oom

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "profiler-worker-events"
VERSION = 1
HINT = "worker events come from `profiler session run`"
COLUMNS = {
    "time": "float64",
    "pid": "int64",
    "event": "object",
    "exit": "object",
    "oom_evidence": "object",
    "cgroup": "object",
    "replacement_pid": "Int64",
    "returncode": "Int64",
}
_STAT_EXIT_CODE = 49  # field 52 of /proc/PID/stat, counted after the ") " that ends comm


@dataclass(slots=True)
class _Watched:
    proc: psutil.Process
    cgroup: oom.CgroupInfo | None


@dataclass(slots=True)
class _Vanish:
    time: float
    record: dict[str, Any]


class WorkerWatcher:
    """Watches ``initial`` workers (and ``master_pid``'s new children) into ``path``.

    Use it as a context manager; the thread stops, pending vanishes are
    written and the file is closed on exit.
    """

    def __init__(
        self,
        path: Path,
        initial: Sequence[int],
        master_pid: int | None,
        interval: float = 1.0,
        *,
        replacement_window: float = 30.0,
        kernel_log: oom.KernelLog | None = None,
    ) -> None:
        self.path = path
        self.initial = list(initial)
        self.master_pid = master_pid
        self.interval = interval
        self.replacement_window = replacement_window
        self.events: list[dict[str, Any]] = []
        self._kernel = kernel_log if kernel_log is not None else oom.KernelLog()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-watcher", daemon=True)
        self._workers: dict[int, _Watched] = {}
        self._master: _Watched | None = None
        self._children: set[int] = set()  # every child of the master seen so far
        self._pending: list[_Vanish] = []  # vanished, replacement not decided yet
        self._unpaired: list[tuple[float, int]] = []  # (time, pid) appeared, no vanish yet
        self._claimed: dict[Path, int] = {}  # cgroup -> OOM kills already blamed on a worker
        self._writer: jsonl.JsonlWriter | None = None

    @property
    def known(self) -> list[int]:
        """The workers alive as of the last check, replacements included."""
        with self._lock:
            return sorted(self._workers)

    def add(self, pid: int) -> bool:
        """Watch one more worker, found after the start (the flight recorder rediscovers
        targets now and then); False when it is already gone."""
        watched = _watch(pid)
        if watched is None:
            return False
        with self._lock:
            self._workers.setdefault(pid, watched)
        return True

    def __enter__(self) -> WorkerWatcher:
        for pid in self.initial:
            watched = _watch(pid)
            if watched is not None:
                self._workers[pid] = watched
        if self.master_pid is not None:
            self._master = _watch(self.master_pid)
            if self._master is not None:
                self._children = set(_children(self._master.proc))
        self._kernel.start()
        header = {
            "initial": self.initial,
            "master_pid": self.master_pid,
            "kernel_log": self._kernel.source,
            "kernel_log_problem": self._kernel.problem,
        }
        self._writer = jsonl.JsonlWriter(self.path, FORMAT, VERSION, header, force=True)
        self._writer.__enter__()
        self._check()  # a worker already dead (a zombie) is reported at once
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._check()
            self._flush(everything=True)
        finally:
            self._kernel.close()
            assert self._writer is not None
            self._writer.__exit__(*exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._check()

    def _check(self) -> None:
        now = time.time()
        for pid, watched in list(self._workers.items()):
            gone, returncode = _gone(watched.proc)
            if not gone:
                continue
            with self._lock:
                del self._workers[pid]
            record = self._vanished(pid, watched, returncode, now, "vanished")
            self._pending.append(_Vanish(now, record))
        if self._master is not None:
            gone, returncode = _gone(self._master.proc)
            if gone:
                master = self._master
                record = self._vanished(master.proc.pid, master, returncode, now, "master-vanished")
                self._write(record)
                self._master = None
            else:
                for pid in _children(self._master.proc):
                    if pid in self._children:
                        continue
                    self._children.add(pid)
                    new = _watch(pid)
                    if new is None:
                        continue
                    with self._lock:
                        self._workers[pid] = new
                    self._unpaired.append((now, pid))
                    self._write({"time": now, "pid": pid, "event": "appeared"})
        self._flush(everything=self._master is None, now=now)

    def _vanished(
        self, pid: int, watched: _Watched, returncode: int | None, now: float, event: str
    ) -> dict[str, Any]:
        info = watched.cgroup
        counter = oom.read_oom_kills(info) if info is not None else None
        before = info
        if info is not None and info.oom_kills is not None:
            # A kill another worker of this cgroup was already blamed for is not this one's.
            claimed = self._claimed.get(info.path, info.oom_kills)
            before = dataclasses.replace(info, oom_kills=max(info.oom_kills, claimed))
        exit_ = oom.classify_exit(
            pid,
            returncode_or_signal=returncode,
            cgroup_before=before,
            cgroup_oom_kills_now=counter,
            kernel_lines=self._kernel.oom_lines(),
        )
        if (
            exit_.kind == "oom-killed"
            and before is not None
            and before.oom_kills is not None
            and counter is not None
            and counter > before.oom_kills
        ):
            self._claimed[before.path] = before.oom_kills + 1
        return {
            "time": now,
            "pid": pid,
            "event": event,
            "exit": exit_.kind,
            "oom_evidence": exit_.evidence if exit_.kind == "oom-killed" else None,
            "cgroup": str(info.path) if info is not None else None,
            "replacement_pid": None,
            "returncode": returncode,
        }

    def _flush(self, *, everything: bool, now: float | None = None) -> None:
        """Pair pending vanishes with the nearest new child; write those that are decided.

        A child that appeared after the vanish is the nearest of all later ones;
        one that appeared before it at distance ``d`` is chosen once ``d`` has
        passed since the vanish without a nearer one. ``everything``: decide now.
        """
        now = time.time() if now is None else now
        still: list[_Vanish] = []
        for vanish in sorted(self._pending, key=lambda v: v.time):
            candidates = [
                (abs(t - vanish.time), t, pid)
                for t, pid in self._unpaired
                if abs(t - vanish.time) <= self.replacement_window
            ]
            best = min(candidates, default=None)
            if best is not None and (
                everything or best[1] >= vanish.time or now - vanish.time >= best[0]
            ):
                self._unpaired.remove((best[1], best[2]))
                vanish.record["replacement_pid"] = best[2]
                self._write(vanish.record)
            elif everything or now - vanish.time > self.replacement_window:
                self._write(vanish.record)
            else:
                still.append(vanish)
        self._pending = still
        self._unpaired = [(t, p) for t, p in self._unpaired if now - t <= self.replacement_window]

    def _write(self, record: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(record)
        self.events.append(record)


def read(path: Path) -> pd.DataFrame:
    """One row per event, the columns (and dtypes) of :func:`empty`."""
    import pandas as pd

    loaded = jsonl.read(path, format=FORMAT, version=VERSION, hint=HINT)
    if not loaded.records:
        return empty()
    rows = [{name: record.get(name) for name in COLUMNS} for record in loaded.records]
    frame: pd.DataFrame = pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)
    return frame


def empty() -> pd.DataFrame:
    """No events: the columns ``time`` (float64), ``pid`` (int64), ``event``, ``exit``,
    ``oom_evidence``, ``cgroup`` (str or None), ``replacement_pid`` and ``returncode`` (Int64)."""
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame({name: [] for name in COLUMNS}).astype(COLUMNS)
    return frame


def _watch(pid: int) -> _Watched | None:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    return _Watched(proc, oom.cgroup_of(pid))


def _children(proc: psutil.Process) -> list[int]:
    """The master's children from ``/proc/PID/task/*/children`` (a few reads), else psutil's
    scan of every process on the host (what a recorder checking each second cannot afford)."""
    try:
        return sorted(
            {
                int(pid)
                for task in Path(f"/proc/{proc.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()
            }
        )
    except (OSError, ValueError):
        pass
    try:
        return [child.pid for child in proc.children()]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _gone(proc: psutil.Process) -> tuple[bool, int | None]:
    """Whether ``proc`` is gone, and its return code when we caught it as a zombie.

    ``is_running`` compares the start time, so a reused PID is not mistaken
    for the worker.
    """
    try:
        if not proc.is_running():
            return True, None
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False, None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True, None
    except psutil.AccessDenied:  # there, but not ours to read: alive as far as we know
        return False, None
    return True, _zombie_returncode(proc.pid)


def _zombie_returncode(pid: int) -> int | None:
    """A zombie's exit status as :attr:`subprocess.Popen.returncode` says it (``-9``: SIGKILL)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) <= _STAT_EXIT_CODE or fields[0] != "Z":
        return None
    status = int(fields[_STAT_EXIT_CODE])
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return None
