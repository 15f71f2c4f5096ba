"""A session folder, read back: the manifest, and every probe's data as a DataFrame.

``open(path)`` (also ``profiler.session.open``) reads and checks
``manifest.json`` and nothing else; each frame is loaded the first time it is
asked for and kept:

* ``activity``: the activity table (:mod:`profiler.session.activity_table`),
  from ``activity.parquet`` when the session ended normally, else from
  ``activity.jsonl`` (a killed session);
* ``stack_samples``: one row per thread per dump, the columns of
  :func:`profiler.capture.stack_log.to_dataframe`;
* ``rss``: one row per worker per RSS sample, the columns of
  :func:`profiler.memory.rss.to_dataframe`;
* ``task_samples``: one row per asyncio task per round of the task sampler
  injected into each worker (:mod:`profiler.capture.task_log`);
* ``pool_samples``: one row per SQLAlchemy pool per round of that sampler: the
  worker's real pool size, overflow, timeout, checked out and waiting
  (:mod:`profiler.capture.pool_log`);
* ``worker_events``: workers that vanished (and how) or appeared
  (:mod:`profiler.targets.membership`);
* ``load``: the load the session ran under, when recorded
  (:mod:`profiler.session.load_record`).

A probe that did not run (no file) gives an empty frame with the same
columns, so analysis code needs no special case. Needs pandas and pyarrow
(dependencies of profiler).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.capture import stack_log
from profiler.capture.stacks import Frame
from profiler.errors import InputError
from profiler.jsonl import LineStream
from profiler.memory import rss as rss_log
from profiler.session import activity_schema, activity_table, load_record
from profiler.session.manifest import FORMAT, MANIFEST, VERSION

if TYPE_CHECKING:
    import pandas as pd

    from profiler.analysis.memory_cause import WorkerPeak
    from profiler.model import Gap
    from profiler.session.load_record import LoadRecord

STACKS_NAME = "stacks.jsonl"
RSS_NAME = "rss.jsonl"
TASKS_DIR = "tasks"
WORKERS_NAME = "workers.jsonl"
HINT = "a session folder comes from `profiler session run -o DIR`"

STACK_COLUMNS = stack_log.COLUMNS
RSS_COLUMNS = ("taken_at", "worker_pid", "rss_bytes")


def open(path: str | Path) -> Session:  # shadows open(): session.reader.open(path) reads best
    """The session in folder ``path``; InputError (exit 7) when its manifest is missing or
    corrupt. Frames are read lazily, on first use."""
    directory = Path(path)
    manifest_path = directory / MANIFEST
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"{directory} is not a profiler session: no {MANIFEST}", hint=HINT
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {manifest_path}: {exc}", hint="check the path") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{manifest_path} is corrupt (line {exc.lineno}: {exc.msg})",
            hint="the other files of the session are still readable one by one",
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{manifest_path} is not a {FORMAT} manifest", hint=HINT)
    if manifest.get("version") != VERSION:
        raise InputError(
            f"{manifest_path} has format version {manifest.get('version')}, expected {VERSION}",
            hint="read it with the profiler version that wrote it",
        )
    session = Session(directory, manifest)
    session.started_at  # noqa: B018  a manifest without a readable start is corrupt: say so now
    return session


class Session:
    """One session folder. ``manifest`` is the parsed ``manifest.json``; frames load lazily.

    Times: ``activity`` holds epoch floats (``taken_at`` on our clock, server
    times with ``clock_offset`` beside them); ``stack_samples`` and ``rss`` hold
    UTC datetimes in ``taken_at``, as their own readers give them. The
    analysis functions (:mod:`profiler.analysis.columns`) accept either.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r}, name={self.manifest.get('name')!r})"

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.manifest.get("settings")
        return settings if isinstance(settings, dict) else {}

    @property
    def interrupted(self) -> bool:
        """Stopped early (Ctrl-C) or killed (no ``ended_at``)."""
        return bool(self.manifest.get("interrupted")) or self.manifest.get("ended_at") is None

    @cached_property
    def started_at(self) -> datetime:
        return _timestamp(self.manifest.get("started_at"), self.path / MANIFEST, "started_at")

    @cached_property
    def ended_at(self) -> datetime:
        """The manifest's ``ended_at``; for a killed session (none), the last time any probe
        recorded (activity snapshot, stack sample or RSS point), else ``started_at``."""
        recorded = self.manifest.get("ended_at")
        if recorded is not None:
            return _timestamp(recorded, self.path / MANIFEST, "ended_at")
        candidates = (
            self._last_activity(),
            self._last_of(self.stack_samples),
            self._last_of(self.rss),
        )
        return max([self.started_at, *(t for t in candidates if t is not None)])

    @property
    def start(self) -> float:
        """``started_at`` as epoch seconds (our clock)."""
        return self.started_at.timestamp()

    @property
    def end(self) -> float:
        """``ended_at`` as epoch seconds: the ``session_end`` the episode functions take."""
        return self.ended_at.timestamp()

    # -- activity -------------------------------------------------------------------------

    @cached_property
    def _activity_table(self) -> activity_table.ActivityTable:
        return activity_table.load_table(self.path)

    @property
    def activity(self) -> pd.DataFrame:
        """One row per backend per snapshot (columns: :mod:`profiler.session.activity_schema`)."""
        if not self._has_activity():
            return activity_schema.empty()
        return self._activity_table.frame

    @property
    def snapshots(self) -> list[float]:
        """Every snapshot's ``taken_at`` (our clock), those with no backend included."""
        if not self._has_activity():
            return []
        return self._activity_table.snapshots

    @cached_property
    def gaps(self) -> list[Gap]:
        """Sampling gaps the pg probe recorded (server unreachable), without loading rows."""
        if "_activity_table" in self.__dict__:
            return self._activity_table.gaps
        return activity_table.gaps(self.path)

    @property
    def activity_header(self) -> dict[str, Any]:
        return self._activity_table.header if self._has_activity() else {}

    def _has_activity(self) -> bool:
        return (self.path / activity_table.JSONL_NAME).exists() or (
            self.path / activity_table.PARQUET_NAME
        ).exists()

    def _last_activity(self) -> datetime | None:
        times = self.snapshots
        return datetime.fromtimestamp(max(times), timezone.utc) if times else None

    # -- stacks and RSS -------------------------------------------------------------------

    @cached_property
    def stack_samples(self) -> pd.DataFrame:
        """One row per thread per dump; empty (same columns) when the stacks probe did not run."""
        path = self.path / STACKS_NAME
        return read_stack_samples(path) if path.exists() else _empty_stacks()

    @cached_property
    def rss(self) -> pd.DataFrame:
        """One row per worker per RSS sample; empty (same columns) without ``rss.jsonl``."""
        import pandas as pd

        path = self.path / RSS_NAME
        if not path.exists():
            frame: pd.DataFrame = pd.DataFrame({name: [] for name in RSS_COLUMNS})
            frame["taken_at"] = pd.to_datetime(frame["taken_at"], utc=True)
            typed: pd.DataFrame = frame.astype({"worker_pid": "int64", "rss_bytes": "int64"})
            return typed
        return rss_log.to_dataframe(rss_log.read(path))

    @cached_property
    def task_samples(self) -> pd.DataFrame:
        """One row per asyncio task per round of the injected task sampler, every worker
        that had one (``tasks/tasks-PID.jsonl``); empty (same columns) when none ran."""
        import pandas as pd

        from profiler.capture import task_log

        paths = sorted((self.path / TASKS_DIR).glob("tasks-*.jsonl"))
        frames = [task_log.read(path) for path in paths]
        frames = [frame for frame in frames if not frame.empty]
        if not frames:
            return task_log.empty()
        combined: pd.DataFrame = pd.concat(frames, ignore_index=True)
        for name in ("task", "stack", "leaf"):
            combined[name] = combined[name].astype("category")
        return combined

    @cached_property
    def pool_samples(self) -> pd.DataFrame:
        """One row per SQLAlchemy pool per round of the task sampler, every worker that had
        one (:mod:`profiler.capture.pool_log`); empty (same columns) when none was read."""
        import pandas as pd

        from profiler.capture import pool_log

        paths = sorted((self.path / TASKS_DIR).glob("tasks-*.jsonl"))
        frames = [frame for frame in map(pool_log.read, paths) if not frame.empty]
        if not frames:
            return pool_log.empty()
        combined: pd.DataFrame = pd.concat(frames, ignore_index=True)
        return combined

    @property
    def task_interval(self) -> float:
        return float(self.settings.get("task_interval") or 0.2)

    @cached_property
    def worker_events(self) -> pd.DataFrame:
        """Workers that vanished or appeared during the session (``workers.jsonl``)."""
        from profiler.targets import membership

        path = self.path / WORKERS_NAME
        return membership.read(path) if path.exists() else membership.empty()

    @cached_property
    def memory_peaks(self) -> list[WorkerPeak]:
        """memray at each worker's peak (``mem/peak-PID.json``); empty without memray."""
        from profiler.session.memory_peaks import read_peaks

        return read_peaks(self.path / "mem")

    @cached_property
    def load(self) -> LoadRecord | None:
        """The load the session ran under, when something recorded it (``load.json``)."""
        return load_record.read(self.path)

    @staticmethod
    def _last_of(frame: pd.DataFrame) -> datetime | None:
        if frame.empty:
            return None
        last = frame["taken_at"].max()
        return None if last is None else last.to_pydatetime()


def read_stack_samples(path: Path) -> pd.DataFrame:
    """A stack sample log as :func:`profiler.capture.stack_log.to_dataframe` gives it, fast.

    ``stack_log.read`` builds a :class:`~profiler.capture.stacks.Frame` per frame
    per sample (17 s and 1.7 GB for 100 k samples 26 frames deep); here each
    distinct stack is folded once: a line's ``frames`` array is cut out of the
    text (the writer sorts keys, so it sits between ``"frames":`` and
    ``,"kind":``) and used as the cache key, and only the rest of the line is
    parsed. Labels come from ``Frame.label`` itself. ``thread_name``,
    ``leaf`` and ``stack`` are categoricals. Failure lines are skipped (the
    reader of ``stack_log`` has them). A torn last line is dropped; anything
    else corrupt is an :class:`InputError`.
    """
    import numpy as np
    import pandas as pd

    stream = LineStream(path, stack_log.FORMAT, stack_log.VERSION, stack_log.HINT)
    folded: dict[str, tuple[int, int, int]] = {}  # frames JSON -> (stack, leaf, depth) codes
    stacks: dict[str, int] = {}
    leaves: dict[str, int] = {}
    names: dict[str | None, int] = {}
    columns: dict[str, list[Any]] = {name: [] for name in STACK_COLUMNS}
    for number, line in stream:
        try:
            record, key = _split_frames(line)
            if record.get("kind") != "sample":
                continue
            shape = folded.get(key)
            if shape is None:
                frames = [Frame(*frame) for frame in json.loads(key)]
                stack = ";".join(frame.label for frame in reversed(frames))
                leaf = frames[0].name if frames else ""
                shape = (
                    stacks.setdefault(stack, len(stacks)),
                    leaves.setdefault(leaf, len(leaves)),
                    len(frames),
                )
                folded[key] = shape
            columns["taken_at"].append(record["taken_at"])
            columns["worker_pid"].append(record["worker_pid"])
            columns["thread_id"].append(record["thread_id"])
            columns["os_thread_id"].append(record["os_thread_id"])
            columns["thread_name"].append(names.setdefault(record["thread_name"], len(names)))
            columns["active"].append(record["active"])
            columns["owns_gil"].append(record["owns_gil"])
            columns["stack"].append(shape[0])
            columns["leaf"].append(shape[1])
            columns["depth"].append(shape[2])
            columns["dump_seconds"].append(record["dump_seconds"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path} line {number} is corrupt ({type(exc).__name__}: {exc})",
                hint="the lines before it are intact",
            ) from None
    if not columns["taken_at"]:
        return _empty_stacks()
    frame: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": pd.to_datetime(columns["taken_at"], utc=True, format="ISO8601"),
            "worker_pid": np.asarray(columns["worker_pid"], dtype=np.int64),
            "thread_id": np.asarray(columns["thread_id"], dtype=np.int64),
            "os_thread_id": pd.array(columns["os_thread_id"], dtype="Int64"),
            "thread_name": _categorical(columns["thread_name"], names),
            "active": np.asarray(columns["active"], dtype=bool),
            "owns_gil": np.asarray(columns["owns_gil"], dtype=bool),
            "leaf": _categorical(columns["leaf"], leaves),
            "depth": np.asarray(columns["depth"], dtype=np.int64),
            "stack": _categorical(columns["stack"], stacks),
            "dump_seconds": np.asarray(columns["dump_seconds"], dtype=np.float64),
        }
    )
    return frame


def _categorical(codes: list[int], categories: dict[Any, int]) -> pd.Categorical:
    """Codes numbered by first appearance -> a Categorical (None is a missing value)."""
    import numpy as np
    import pandas as pd

    values = np.asarray(codes, dtype=np.int64)
    if None in categories:
        missing = categories.pop(None)
        values = np.where(values == missing, -1, values - (values > missing))
    made: pd.Categorical = pd.Categorical.from_codes(values, categories=pd.Index(list(categories)))
    return made


def _split_frames(line: str) -> tuple[dict[str, Any], str]:
    """The record without its frames, and the frames' JSON text (the fold cache key)."""
    start = line.find('"frames":')
    end = line.find(',"kind":', start) if start >= 0 else -1
    if start < 0 or end < 0:  # a failure line, or not written by StackLogWriter
        record = json.loads(line)
        if not isinstance(record, dict):
            raise TypeError("not an object")
        frames = record.pop("frames", [])
        return record, json.dumps(frames, separators=(",", ":"))
    key = line[start + len('"frames":') : end]
    record = json.loads(line[:start] + line[end + 1 :])
    if not isinstance(record, dict):
        raise TypeError("not an object")
    return record, key


def _empty_stacks() -> pd.DataFrame:
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": pd.to_datetime(pd.Series([], dtype="float64"), utc=True),
            "worker_pid": pd.Series([], dtype="int64"),
            "thread_id": pd.Series([], dtype="int64"),
            "os_thread_id": pd.Series([], dtype="Int64"),
            "thread_name": pd.Categorical([]),
            "active": pd.Series([], dtype=bool),
            "owns_gil": pd.Series([], dtype=bool),
            "leaf": pd.Categorical([]),
            "depth": pd.Series([], dtype="int64"),
            "stack": pd.Categorical([]),
            "dump_seconds": pd.Series([], dtype="float64"),
        }
    )
    return frame


def _timestamp(value: Any, source: Path, key: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InputError(f"{source}: {key} is not an ISO time: {value!r}", hint=HINT) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
