"""Each worker's resident memory over wall-clock time, while memray is attached.

memray's capture has its own memory snapshots, but on memray's clock and only
for the tracked process; the OOM killer acts on RSS, and lining memory up with
``pg_stat_activity`` needs our wall clock. So a thread samples every worker's
RSS on a fixed grid and appends it (:mod:`profiler.jsonl`) as it goes: the
series survives a Ctrl-C or a crash of ours, and a worker that exits is
recorded as such, not as a drop to zero.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from profiler import jsonl

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "profiler-rss"
VERSION = 1
HINT = "RSS timelines come from `profiler mem attach`"


@dataclass(frozen=True, slots=True)
class RssPoint:
    worker_pid: int
    taken_at: datetime
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class RssTimeline:
    header: dict[str, Any]
    points: list[RssPoint]
    exits: dict[int, datetime]  # workers seen gone, and when
    torn_tail: bool = False

    def peak(self, pid: int) -> int | None:
        values = [p.rss_bytes for p in self.points if p.worker_pid == pid]
        return max(values) if values else None


class RssSampler:
    """Samples ``pids`` every ``interval`` seconds into ``path`` on a background thread."""

    def __init__(self, path: Path, pids: Sequence[int], interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._procs = {pid: psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)}
        self._stop = threading.Event()
        self._writer = jsonl.JsonlWriter(
            path, FORMAT, VERSION, {"interval": interval, "pids": list(pids)}, force=True
        )
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peaks: dict[int, int] = {}
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.exited: set[int] = set()

    def __enter__(self) -> RssSampler:
        self._writer.__enter__()
        self._sample()  # the baseline, before anything else happens
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # and the value at the end
        self._writer.__exit__(*exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        now = datetime.now(timezone.utc).isoformat()
        for pid, proc in list(self._procs.items()):
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:  # dead, not yet reaped by its parent
                    raise psutil.ZombieProcess(pid)
                rss = int(proc.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self.exited.add(pid)
                del self._procs[pid]
                self._writer.write({"kind": "exit", "pid": pid, "taken_at": now})
                continue
            self.first.setdefault(pid, rss)
            self.last[pid] = rss
            self.peaks[pid] = max(rss, self.peaks.get(pid, 0))
            self._writer.write({"kind": "rss", "pid": pid, "taken_at": now, "rss": rss})


def read(path: Path) -> RssTimeline:
    loaded = jsonl.read(path, format=FORMAT, version=VERSION, hint=HINT)
    points: list[RssPoint] = []
    exits: dict[int, datetime] = {}
    for record in loaded.records:
        taken_at = datetime.fromisoformat(record["taken_at"])
        if record["kind"] == "exit":
            exits[record["pid"]] = taken_at
        else:
            points.append(RssPoint(record["pid"], taken_at, record["rss"]))
    return RssTimeline(loaded.header, points, exits, loaded.torn_tail)


@dataclass(frozen=True, slots=True)
class HeapPoint:
    """memray's own snapshot: RSS and the heap it tracked, at a wall-clock time (UTC)."""

    worker_pid: int
    taken_at: datetime
    rss_bytes: int
    heap_bytes: int


def from_capture(path: Path) -> list[HeapPoint]:
    """memray's memory snapshots (every ~10 ms while tracking), on the wall clock.

    Complements the RSS timeline with the heap memray saw, which separates
    Python allocations from RSS the allocator has not given back. Raises
    :class:`InputError` when the capture cannot be read.
    """
    from profiler.memory.reader import open_reader

    reader = open_reader(path)
    pid = int(reader.metadata.pid)
    return [
        HeapPoint(
            pid,
            datetime.fromtimestamp(snapshot.time / 1000, timezone.utc),
            int(snapshot.rss),
            int(snapshot.heap),
        )
        for snapshot in reader.get_memory_snapshots()
    ]


def to_dataframe(timeline: RssTimeline) -> pd.DataFrame:
    """One row per worker per sample: ``taken_at`` (UTC), ``worker_pid``, ``rss_bytes``."""
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(
        [(p.taken_at, p.worker_pid, p.rss_bytes) for p in timeline.points],
        columns=["taken_at", "worker_pid", "rss_bytes"],
    )
    frame["taken_at"] = pd.to_datetime(frame["taken_at"], utc=True)
    return frame
