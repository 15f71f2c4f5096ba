"""The connection-pool figures the task sampler records inside each worker, read back.

The injected sampler (:mod:`profiler.capture.task_payload`) writes, before each
round of task lines, a ``pools`` line: every SQLAlchemy pool alive in the
worker with its class, ``size``, ``max_overflow`` (-1: no limit), ``timeout``,
``checked_out`` and ``waiting``. Those are the worker's real pool figures,
where a cap inferred from the most transactions seen at once is a guess
(:mod:`profiler.analysis.findings.pool`). This reads them from the same
``tasks-PID.jsonl`` files, skipping every other line by its prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.capture import task_payload
from profiler.errors import InputError
from profiler.jsonl import LineStream

if TYPE_CHECKING:
    import pandas as pd

POOL_COLUMNS = (
    "taken_at",
    "worker_pid",
    "pool_id",
    "pool_class",
    "size",
    "max_overflow",
    "timeout",
    "checked_out",
    "waiting",
)
DTYPES = {
    "taken_at": "float64",
    "worker_pid": "int64",
    "pool_id": "int64",
    "pool_class": "object",
    "timeout": "float64",
}
_PREFIX = '{"kind": "pools"'  # json.dumps keeps the payload's key order: kind first
HINT = "task sample files come from `profiler session run --tasks`"


def read(path: Path) -> pd.DataFrame:
    """One row per pool per round of the sampler writing ``path`` (see ``POOL_COLUMNS``):
    ``taken_at`` in epoch seconds (the worker's clock, which is ours: same host), the
    figures as nullable integers (``<NA>``: not a queue pool, or not readable)."""
    stream = LineStream(path, task_payload.FORMAT, task_payload.VERSION, HINT)
    rows: list[tuple[Any, ...]] = []
    pid: int | None = None
    for number, line in stream:
        if pid is None:
            pid = stream.header.get("pid")
            if not isinstance(pid, int):
                raise InputError(f"{path} has a header without the worker's pid", hint=HINT)
        if not line.startswith(_PREFIX):
            continue
        try:
            record = json.loads(line)
            taken = float(record["taken_at"])
            for pool in record["pools"]:
                rows.append(
                    (
                        taken,
                        pid,
                        int(pool["id"]),
                        str(pool["class"]),
                        *(_count(pool.get(name)) for name in ("size", "max_overflow")),
                        _seconds(pool.get("timeout")),
                        *(_count(pool.get(name)) for name in ("checked_out", "waiting")),
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path} line {number} is corrupt ({type(exc).__name__}: {exc})",
                hint="the lines before it are intact",
            ) from None
    return _frame(rows)


def empty() -> pd.DataFrame:
    """The pool table with no rows, typed as :func:`read` types it."""
    return _frame([])


def _frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    import pandas as pd

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in POOL_COLUMNS]
    data = dict(zip(POOL_COLUMNS, columns, strict=True))
    ints = ("size", "max_overflow", "checked_out", "waiting")
    frame: pd.DataFrame = pd.DataFrame(
        {
            name: (
                pd.array(list(data[name]), dtype="Int64")
                if name in ints
                else pd.Series(data[name], dtype=DTYPES[name])
            )
            for name in POOL_COLUMNS
        }
    )
    return frame


def _count(value: Any) -> int | None:
    return value if type(value) is int else None


def _seconds(value: Any) -> float:
    return float(value) if type(value) in (int, float) else float("nan")
