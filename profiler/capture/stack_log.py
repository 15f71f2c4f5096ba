"""Timestamped stack samples on disk, and back as records or a DataFrame.

The feed that lines stacks up with ``pg_stat_activity``: every
:class:`StackSample` of a periodic dump (``profiler cpu dump --interval``, and
sessions) is one JSON line (:mod:`profiler.jsonl`), appended as it is taken so
a killed capture keeps what it had. Frames are positional arrays (name,
filename, line, module, short filename): the same few frames repeat in every
sample, and objects would triple the bytes. Locals are never written: they may
hold secrets, and a log outlives the terminal it was read in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler import jsonl
from profiler.capture.stacks import DumpFailure, Frame, StackSample

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "profiler-stack-samples"
VERSION = 1
# The DataFrame's columns (to_dataframe), in order.
COLUMNS = (
    "taken_at",
    "worker_pid",
    "thread_id",
    "os_thread_id",
    "thread_name",
    "active",
    "owns_gil",
    "leaf",
    "depth",
    "stack",
    "dump_seconds",
)
HINT = "stack sample logs come from `profiler cpu dump --interval S -o FILE`"


@dataclass(frozen=True, slots=True)
class StackLog:
    header: dict[str, Any]
    samples: list[StackSample]
    failures: list[DumpFailure]
    torn_tail: bool = False


class StackLogWriter(jsonl.JsonlWriter):
    """Appends samples and failures; ``header`` records the interval and the targets."""

    def __init__(self, path: Path, header: dict[str, Any], *, force: bool = False) -> None:
        super().__init__(path, FORMAT, VERSION, header, force=force)
        self.samples = 0
        self.failures = 0

    def __enter__(self) -> StackLogWriter:
        super().__enter__()
        return self

    def add(self, item: StackSample | DumpFailure) -> None:
        if isinstance(item, DumpFailure):
            self.failures += 1
            self.write(
                {
                    "kind": "failure",
                    "worker_pid": item.worker_pid,
                    "taken_at": item.taken_at.isoformat(),
                    "reason": item.reason,
                    "dropped": item.dropped,
                }
            )
            return
        self.samples += 1
        self.write(
            {
                "kind": "sample",
                "worker_pid": item.worker_pid,
                "thread_id": item.thread_id,
                "os_thread_id": item.os_thread_id,
                "thread_name": item.thread_name,
                "taken_at": item.taken_at.isoformat(),
                "dump_seconds": round(item.dump_seconds, 6),
                "active": item.active,
                "owns_gil": item.owns_gil,
                "frames": [
                    [f.name, f.filename, f.line, f.module, f.short_filename] for f in item.frames
                ],
            }
        )


def read(path: Path) -> StackLog:
    """Load a stack sample log; a torn last line is dropped, anything else corrupt is an error."""
    loaded = jsonl.read(path, format=FORMAT, version=VERSION, hint=HINT)
    samples: list[StackSample] = []
    failures: list[DumpFailure] = []
    for record in loaded.records:
        taken_at = datetime.fromisoformat(record["taken_at"])
        if record["kind"] == "failure":
            failures.append(
                DumpFailure(record["worker_pid"], taken_at, record["reason"], record["dropped"])
            )
            continue
        samples.append(
            StackSample(
                worker_pid=record["worker_pid"],
                thread_id=record["thread_id"],
                thread_name=record["thread_name"],
                taken_at=taken_at,
                dump_seconds=record["dump_seconds"],
                active=record["active"],
                owns_gil=record["owns_gil"],
                frames=tuple(Frame(*frame) for frame in record["frames"]),
                os_thread_id=record["os_thread_id"],
            )
        )
    return StackLog(loaded.header, samples, failures, loaded.torn_tail)


def to_dataframe(samples: list[StackSample]) -> pd.DataFrame:
    """One row per thread per dump: when, which worker and thread, where (leaf) and the stack.

    ``stack`` is the collapsed notation (outermost first), so grouping by it
    and counting gives a flamegraph's input for any time slice. Needs pandas
    (a dependency of profiler).
    """
    import pandas as pd

    rows = [
        (
            sample.taken_at,
            sample.worker_pid,
            sample.thread_id,
            sample.os_thread_id,
            sample.thread_name,
            sample.active,
            sample.owns_gil,
            sample.frames[0].name if sample.frames else "",
            len(sample.frames),
            sample.folded(),
            sample.dump_seconds,
        )
        for sample in samples
    ]
    frame: pd.DataFrame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["taken_at"] = pd.to_datetime(frame["taken_at"], utc=True)
    return frame
