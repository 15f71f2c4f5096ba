"""The files the task sampler writes, read back as pandas tables.

The sampler (:mod:`profiler.capture.task_payload`, started by
:mod:`profiler.capture.task_inject`) appends JSON lines inside the worker, so
this is the only place that knows their shape: sessions, ``watch`` bursts,
notebooks and benchmarks read them through here, and a reader never needs the
worker, the debugger or memray.

File format (JSON lines, ``profiler-task-samples`` version 1): a header
(``kind: header``, ``pid``, ``interval``, ``python``, ``started_at``, ...), then
per round one ``task`` line per live task (``taken_at``, ``task_id``, ``task``,
``frames`` innermost first as ``[name, filename, line]``, ``awaiting``,
``running``, ``backends``, ``ports``: the local ports of those connections' TCP
client sockets, absent from older files; ``endpoint`` with its ``request``, ``openers``)
and one ``round`` line (``taken_at``, ``tasks``,
``skipped``, ``seconds`` and ``cpu_seconds``: the round's wall and CPU time), and
last an ``end`` line
(``reason``: ``duration``, ``stopped``, ``shutdown``, ``lease expired`` or
``error: ...``). The ``pools`` lines are :mod:`profiler.capture.pool_log`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.analysis.code_paths import ENDPOINT_PREFIX
from profiler.capture import task_payload
from profiler.capture.stacks import Frame
from profiler.errors import InputError
from profiler.jsonl import LineStream

if TYPE_CHECKING:
    import pandas as pd

FORMAT = task_payload.FORMAT
VERSION = task_payload.VERSION
HINT = "task samples are written by `profiler.capture.task_inject.inject` (session probe `tasks`)"

TASK_COLUMNS = (
    "taken_at",
    "worker_pid",
    "task_id",
    "task",
    "stack",
    "leaf",
    "depth",
    "backends",
    "ports",
    "awaiting",
    "endpoint",
    "request",
    "openers",
)
ROUND_COLUMNS = ("taken_at", "tasks", "skipped", "seconds", "cpu_seconds")


def read(path: Path) -> pd.DataFrame:
    """One row per task per round: see ``TASK_COLUMNS``.

    ``stack`` is collapsed outermost first with :attr:`Frame.label` labels,
    so it merges with py-spy's stacks; ``leaf`` is the innermost frame's
    name; ``backends`` are tuples of backend PIDs, ``ports`` tuples of the local ports
    of those connections' client sockets (empty for files written before them). A torn last line is
    ignored; any other corrupt line, or a file of another format or version,
    is an :class:`InputError`.
    """
    return _parse(path).tasks()


def read_rounds(path: Path) -> pd.DataFrame:
    """One row per round: ``taken_at`` (UTC), ``tasks``, ``skipped``, ``seconds`` (wall) and
    ``cpu_seconds`` (the sampler thread's CPU time: its cost to the worker)."""
    return _parse(path).rounds_frame()


def read_end(path: Path) -> dict[str, Any] | None:
    """The ``end`` record (``taken_at``, ``reason``), or None while the sampler runs."""
    return _parse(path).end


def read_header(path: Path) -> dict[str, Any]:
    """The header: the worker's ``pid``, ``interval``, ``python``, ``started_at``, ..."""
    return _parse(path).header


def sys_path_prefixes(header: Any) -> list[str]:
    """The worker's absolute ``sys.path`` entries from a task log's header, each ending in
    ``/``, longest first: the first a file lies under is the one to strip from it."""
    entries = header.get("sys_path") if isinstance(header, dict) else None
    return sorted(
        (e.rstrip("/") + "/" for e in entries or [] if isinstance(e, str) and e.startswith("/")),
        key=len,
        reverse=True,
    )


def endpoint_label(endpoint: Any) -> str | None:
    """``endpoint POST /tools/{tool_id}/invoke (invoke_tool)``: a task's request, as the root
    frame of its hold stacks (:data:`ENDPOINT_PREFIX`); None when unknown."""
    if not isinstance(endpoint, dict) or not endpoint.get("name"):
        return None
    route = " ".join(str(part) for part in (endpoint.get("method"), endpoint.get("route")) if part)
    name = str(endpoint["name"]).rsplit(".<locals>.", 1)[-1]
    return f"{ENDPOINT_PREFIX}{route} ({name})" if route else f"{ENDPOINT_PREFIX}({name})"


def _openers(
    value: Any, short: Callable[[str], str | None]
) -> tuple[tuple[int, str, str, int, str], ...]:
    """A task line's ``openers`` (``[backend, function, filename, line, via]`` each, the
    file as stack labels show it), or none (files written before the sampler recorded
    them)."""
    if not isinstance(value, list):
        return ()
    rows = []
    for item in value:
        if isinstance(item, list) and len(item) == 5:
            backend, function, filename, line, via = item
            name = str(filename)
            shown = short(name) or os.path.basename(name)
            rows.append((int(backend), str(function), shown, int(line), str(via)))
    return tuple(rows)


def empty() -> pd.DataFrame:
    """The task table with no rows, typed as :func:`read` types it."""
    return _TaskLog(Path(), {"pid": 0}).tasks()


@dataclass
class _TaskLog:
    """One task file as read: its header, a list per column of the task table (filled
    line by line, so no record per row is built), its rounds and its ``end`` line."""

    path: Path
    header: dict[str, Any]
    taken: list[float] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    stacks: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    backends: list[tuple[int, ...]] = field(default_factory=list)
    ports: list[tuple[int, ...]] = field(default_factory=list)
    awaiting: list[str | None] = field(default_factory=list)
    endpoints: list[str | None] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    openers: list[tuple[tuple[int, str, str, int, str], ...]] = field(default_factory=list)
    rounds: list[tuple[float, int, int, float, float]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    shapes: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    prefixes: list[str] | None = None  # the worker's sys.path entries, longest first

    def short(self, filename: str) -> str | None:
        """``filename`` without the longest ``sys.path`` entry of the worker it lies under,
        as py-spy's ``short_filename`` is, so task and thread stacks share labels."""
        if self.prefixes is None:
            self.prefixes = sys_path_prefixes(self.header)
        for prefix in self.prefixes:
            if filename.startswith(prefix):
                return filename[len(prefix) :]
        return None

    def add_task(self, record: dict[str, Any], frames_key: str) -> None:
        shape = self.shapes.get(frames_key)
        if shape is None:
            frames = [
                Frame(str(name), str(filename), int(line), None, self.short(str(filename)))
                for name, filename, line in record["frames"]
            ]
            stack = ";".join(frame.label for frame in reversed(frames))
            shape = (stack, frames[0].name if frames else "", len(frames))
            self.shapes[frames_key] = shape
        openers = _openers(record.get("openers"), self.short)
        # What an opener holds is held by the task, also where the bounded walk missed it
        # (a yield dependency's session on the request's exit stack).
        backends = tuple(sorted({int(pid) for pid in record["backends"]} | {o[0] for o in openers}))
        self.taken.append(float(record["taken_at"]))
        self.task_ids.append(int(record["task_id"]))
        self.names.append(str(record["task"]))
        self.stacks.append(shape[0])
        self.leaves.append(shape[1])
        self.depths.append(shape[2])
        self.backends.append(backends)
        self.ports.append(tuple(int(port) for port in record.get("ports") or ()))
        awaiting = record.get("awaiting")
        self.awaiting.append(None if awaiting is None else str(awaiting))
        endpoint = record.get("endpoint")
        self.endpoints.append(endpoint_label(endpoint))
        request = endpoint.get("request") if isinstance(endpoint, dict) else None
        self.requests.append(request if isinstance(request, int) else -1)
        self.openers.append(openers)

    def tasks(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        rows = len(self.taken)
        backends = np.empty(rows, dtype=object)
        backends[:] = self.backends
        openers = np.empty(rows, dtype=object)
        openers[:] = self.openers
        ports = np.empty(rows, dtype=object)
        ports[:] = self.ports
        frame: pd.DataFrame = pd.DataFrame(
            {
                "taken_at": _utc(self.taken),
                "worker_pid": np.full(rows, int(self.header["pid"]), dtype=np.int64),
                "task_id": np.asarray(self.task_ids, dtype=np.int64),
                "task": pd.Categorical(self.names),
                "stack": pd.Categorical(self.stacks),
                "leaf": pd.Categorical(self.leaves),
                "depth": np.asarray(self.depths, dtype=np.int64),
                "backends": pd.Series(backends, dtype=object),
                "ports": pd.Series(ports, dtype=object),
                "awaiting": pd.Categorical(self.awaiting),
                "endpoint": pd.Categorical(self.endpoints),
                "request": np.asarray(self.requests, dtype=np.int64),
                "openers": pd.Series(openers, dtype=object),
            }
        )
        return frame

    def rounds_frame(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        frame: pd.DataFrame = pd.DataFrame(
            {
                "taken_at": _utc([r[0] for r in self.rounds]),
                "tasks": np.asarray([r[1] for r in self.rounds], dtype=np.int64),
                "skipped": np.asarray([r[2] for r in self.rounds], dtype=np.int64),
                "seconds": np.asarray([r[3] for r in self.rounds], dtype=np.float64),
                "cpu_seconds": np.asarray([r[4] for r in self.rounds], dtype=np.float64),
            }
        )
        return frame


def _parse(path: Path) -> _TaskLog:
    """Every line of ``path``, checked; a torn last line is dropped (:class:`LineStream`)."""
    stream = LineStream(path, FORMAT, VERSION, HINT)
    lines = iter(stream)
    first = next(lines, None)  # reads (and checks) the header
    scan = _TaskLog(path, stream.header)
    if not isinstance(scan.header.get("pid"), int):
        raise InputError(f"{path} has a header without the worker's pid", hint=HINT)
    for number, line in [first, *lines] if first is not None else []:
        try:
            record = json.loads(line)
            kind = record["kind"]
            if kind == "task":
                scan.add_task(record, json.dumps(record["frames"]))
            elif kind == "round":
                scan.rounds.append(
                    (
                        float(record["taken_at"]),
                        int(record["tasks"]),
                        int(record.get("skipped", 0)),
                        float(record["seconds"]),
                        float(record.get("cpu_seconds", "nan")),
                    )
                )
            elif kind == "end":
                scan.end = {"taken_at": float(record["taken_at"]), "reason": str(record["reason"])}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(
                f"{path} line {number} is corrupt ({type(exc).__name__}: {exc})",
                hint="the lines before it are intact",
            ) from None
    return scan


def _utc(epochs: Iterable[float]) -> pd.DatetimeIndex:
    import numpy as np
    import pandas as pd

    return pd.to_datetime(np.asarray(list(epochs), dtype=np.float64), unit="s", utc=True)
