"""An activity recording as one flat columnar table: one row per backend per snapshot.

:mod:`profiler.pg.recording` builds a :class:`~profiler.model.Snapshot` per
line, which is right for ``db watch`` but costs minutes and gigabytes for an
hour at 1,000 backends (3.6 M rows). Here the JSONL is streamed line by line
into Arrow arrays, a chunk at a time, without building a record per row;
repetitive strings (state, query, application_name, wait_event, ...) are
dictionary-encoded, so they load as pandas categoricals and a million copies
of one query text cost a million small integers.

Columns (see ``docs/reference/session-format.md``):

* ``taken_at``: the snapshot's time (epoch seconds, our clock), from the line;
* ``clock_offset``: ``taken_at - sampled_at``: add it to any server time of the
  row (``xact_start``, ``state_change``, ...) to put it on our clock;
* every :class:`~profiler.model.ActivitySample` field, server-clock floats,
  strings and integers as recorded, nulls as NaN / ``<NA>`` / NaN category;
* ``owner_pid``, ``owner_kind``, ``owner_cmdline``, ``owner_via``: the
  :class:`~profiler.model.Owner` of the row's backend identity
  ``(pid, backend_start)``, carried forward from the snapshot that named it
  (a recording writes an owner when a backend first appears, and again only
  when it changes: behind PgBouncer in transaction pooling a backend serves
  another worker with each transaction). ``owner_via`` names the pooler a
  worker was found through (``pgbouncer``), else null; ``owner_port``
  is the local port of the TCP socket the owner holds (through a pooler, its
  socket to the pooler), which task samples name: null over a Unix socket.

:func:`convert` writes the table as Parquet (zstd) at the end of a session,
with the recording's header, gaps and every snapshot's time in the file's
metadata; :func:`load` prefers that file when it matches the JSONL beside it.
pandas and pyarrow are dependencies of profiler.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import InputError
from profiler.jsonl import LineStream
from profiler.model import ActivitySample, Gap
from profiler.pg import recording

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

JSONL_NAME = "activity.jsonl"
PARQUET_NAME = "activity.parquet"
TABLE_FORMAT = "profiler-activity-table"
TABLE_VERSION = 3
# Version 1 had no owner_via, version 2 no owner_port: they read with those columns null.
_READABLE_VERSIONS = (1, 2, TABLE_VERSION)
METADATA_KEY = b"profiler"
HINT = "activity recordings come from `profiler session run` or `profiler db watch -o FILE`"
CHUNK_ROWS = 1 << 17  # rows per Arrow batch / Parquet row group: bounded memory while streaming

FLOAT_COLUMNS = ("sampled_at", "backend_start", "xact_start", "query_start", "state_change")
INT_COLUMNS = ("pid", "leader_pid", "client_port", "query_id")
BOOL_COLUMNS = ("query_truncated",)
STRING_COLUMNS = tuple(
    name
    for name in ActivitySample._fields
    if name not in FLOAT_COLUMNS + INT_COLUMNS + BOOL_COLUMNS
)
OWNER_COLUMNS = ("owner_pid", "owner_kind", "owner_cmdline", "owner_via", "owner_port")
COLUMNS: tuple[str, ...] = ("taken_at", "clock_offset", *ActivitySample._fields, *OWNER_COLUMNS)
NOT_NULL_INTS = ("pid",)


@dataclass(frozen=True, slots=True)
class ActivityTable:
    """What a recording holds besides its rows: header, gaps, every snapshot's time."""

    frame: pd.DataFrame
    header: dict[str, Any]
    gaps: list[Gap]
    snapshots: list[float]  # every snapshot's taken_at, in file order, empty ones included
    torn_tail: bool = False


@dataclass
class _Owners:
    """Owners by backend identity, numbered in the order named.

    ``by_identity`` holds an identity's first owner; an identity named again
    with another owner (seen through a pooler in transaction pooling) also has
    every (snapshot number, owner number) in ``changes``, oldest first.
    """

    by_identity: dict[tuple[int, float | None], int] = field(default_factory=dict)
    changes: dict[tuple[int, float | None], list[tuple[int, int]]] = field(default_factory=dict)
    pids: list[int | None] = field(default_factory=list)
    kinds: list[str | None] = field(default_factory=list)
    cmdlines: list[str | None] = field(default_factory=list)
    vias: list[str | None] = field(default_factory=list)
    ports: list[int | None] = field(default_factory=list)
    named_at: list[int] = field(default_factory=list)  # the snapshot number that named it
    _records: list[dict[str, Any]] = field(default_factory=list)

    def add(self, identity: tuple[int, float | None], record: dict[str, Any], at: int) -> None:
        first = self.by_identity.get(identity)
        if first is not None:
            versions = self.changes.get(identity)
            latest = versions[-1][1] if versions else first
            if self._records[latest] == record:
                return
            self.changes.setdefault(identity, [(self.named_at[first], first)]).append(
                (at, len(self.pids))
            )
        else:
            self.by_identity[identity] = len(self.pids)
        self.named_at.append(at)
        self._records.append(record)
        pid = record.get("pid")
        self.pids.append(None if pid is None else int(pid))
        self.kinds.append(record.get("kind"))
        self.cmdlines.append(record.get("cmdline"))
        self.vias.append(record.get("via") or None)
        port = record.get("client_port")
        self.ports.append(None if port is None else int(port))

    def latest(self, identity: tuple[int, float | None], snapshot: int, first: int) -> int:
        """The owner number that applies to ``identity`` at snapshot number ``snapshot``."""
        code = first
        for named, number in self.changes.get(identity, ()):
            if named > snapshot:
                break
            code = number
        return code


@dataclass
class _Scan:
    stream: LineStream
    gaps: list[Gap] = field(default_factory=list)
    snapshots: list[float] = field(default_factory=list)

    @property
    def header(self) -> dict[str, Any]:
        return self.stream.header

    @property
    def torn_tail(self) -> bool:
        return self.stream.torn_tail

    @property
    def source_bytes(self) -> int:
        return self.stream.size


def schema() -> pa.Schema:
    """The Arrow schema of the table (dictionary-encoded strings)."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    text = pa.dictionary(pa.int32(), pa.string())
    fields = [pa.field("taken_at", pa.float64()), pa.field("clock_offset", pa.float64())]
    for name in ActivitySample._fields:
        if name in FLOAT_COLUMNS:
            fields.append(pa.field(name, pa.float64()))
        elif name in INT_COLUMNS:
            fields.append(pa.field(name, pa.int64()))
        elif name in BOOL_COLUMNS:
            fields.append(pa.field(name, pa.bool_()))
        else:
            fields.append(pa.field(name, text))
    fields += [
        pa.field("owner_pid", pa.int64()),
        pa.field("owner_kind", text),
        pa.field("owner_cmdline", text),
        pa.field("owner_via", text),
        pa.field("owner_port", pa.int64()),
    ]
    return pa.schema(fields)


def frame_from_jsonl(path: Path) -> pd.DataFrame:
    """The table of an activity JSONL; a torn last line is dropped, anything else corrupt is an
    :class:`~profiler.errors.InputError`."""
    return read_jsonl(path).frame


def read_jsonl(path: Path) -> ActivityTable:
    """:func:`frame_from_jsonl` plus the header, gaps and snapshot times."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    scan, batches = _scan_batches(path)
    table = pa.Table.from_batches(list(batches), schema=schema())
    columns = dict(zip(table.column_names, table.columns, strict=True))
    del table  # _to_pandas frees each column as it converts it: one copy at a time
    return ActivityTable(
        _to_pandas(columns), scan.header, scan.gaps, scan.snapshots, scan.torn_tail
    )


def convert(jsonl_path: Path, parquet_path: Path) -> int:
    """Write ``jsonl_path`` as Parquet (zstd, one row group per chunk); the number of rows.

    Streams: memory stays at a chunk or two whatever the recording's length.
    The file appears atomically (written beside, then renamed), so a present
    Parquet file is always a complete one; its metadata records the size of
    the JSONL it was made from, which :func:`load` compares.
    """
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    partial = parquet_path.with_name(parquet_path.name + ".partial")
    rows = 0
    try:
        scan, batches = _scan_batches(jsonl_path)
        with pq.ParquetWriter(partial, schema(), compression="zstd") as writer:
            for batch in batches:
                writer.write_table(pa.Table.from_batches([batch]))
                rows += batch.num_rows
            writer.add_key_value_metadata({METADATA_KEY.decode(): json.dumps(_metadata(scan))})
        os.replace(partial, parquet_path)
    except OSError as exc:
        raise InputError(
            f"cannot write {parquet_path}: {exc.strerror or exc}",
            hint="check the folder is writable; the JSONL stays readable",
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return rows


def read_parquet(path: Path) -> ActivityTable:
    """A table :func:`convert` wrote; InputError when it is not one."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    meta = _parquet_metadata(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint="delete it to read the JSONL") from None
    for column in ("owner_via", "owner_port"):  # added by versions 2 and 3
        if meta.get("version") in (1, 2) and column not in table.column_names:
            import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

            field_ = schema().field(column)
            table = table.append_column(field_, pa.nulls(table.num_rows, field_.type))
    if table.schema.remove_metadata() != schema():
        raise InputError(f"{path} does not have the activity table's columns", hint=HINT)
    columns = dict(zip(table.column_names, table.columns, strict=True))
    del table  # _to_pandas frees each column as it converts it: one copy at a time
    return ActivityTable(
        _to_pandas(columns),
        meta["header"],
        [_gap(g) for g in meta["gaps"]],
        [float(t) for t in meta["snapshots"]],
        bool(meta.get("torn_tail", False)),
    )


def empty() -> pd.DataFrame:
    """A table with no rows and every column, typed as a loaded one is."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    table = pa.Table.from_batches([], schema=schema())
    return _to_pandas(dict(zip(table.column_names, table.columns, strict=True)))


def load(session_dir: Path) -> pd.DataFrame:
    """The activity table of a session folder: Parquet when current, else the JSONL."""
    return load_table(session_dir).frame


def load_table(session_dir: Path) -> ActivityTable:
    """:func:`load` with header, gaps and snapshot times.

    ``activity.parquet`` is used when it exists and was made from the whole
    ``activity.jsonl`` beside it (or the JSONL is gone); a killed session has no
    Parquet file, or one older than its JSONL, and is read from the JSONL.
    """
    source, columnar = session_dir / JSONL_NAME, session_dir / PARQUET_NAME
    if columnar.exists() and _parquet_is_current(columnar, source):
        return read_parquet(columnar)
    if not source.exists():
        raise InputError(
            f"{session_dir} has no activity recording ({JSONL_NAME})",
            hint="the pg probe did not run or failed: see manifest.json",
        )
    return read_jsonl(source)


def gaps(session_dir: Path) -> list[Gap]:
    """The recorded gaps alone, without loading the rows (Parquet metadata, or a JSONL scan)."""
    source, columnar = session_dir / JSONL_NAME, session_dir / PARQUET_NAME
    if columnar.exists() and _parquet_is_current(columnar, source):
        return [_gap(g) for g in _parquet_metadata(columnar)["gaps"]]
    if not source.exists():
        return []
    found: list[Gap] = []
    for _, line in _stream(source):
        if '"gap"' in line:
            record = json.loads(line)
            if record.get("kind") == "gap":
                found.append(_gap(record))
    return found


# -- the scanner ---------------------------------------------------------------------------


def _stream(path: Path) -> LineStream:
    return LineStream(path, recording.FORMAT, recording.VERSION, HINT)


def _scan_batches(path: Path) -> tuple[_Scan, Iterator[pa.RecordBatch]]:
    """The scan state (filled in as the batches are consumed) and the batches themselves."""
    scan = _Scan(_stream(path))
    lines = iter(scan.stream)
    # Read the header now, so a wrong file fails before any batch is asked for.
    first = next(lines, None)
    return scan, _batches(path, scan, first, lines)


def _batches(
    path: Path,
    scan: _Scan,
    first: tuple[int, str] | None,
    lines: Iterator[tuple[int, str]],
) -> Iterator[pa.RecordBatch]:
    """Snapshot lines, a chunk of rows at a time, as Arrow batches.

    Per line Python only parses the JSON and turns each row into a tuple; the
    rows of a chunk then become one Arrow struct array in a single C++ call
    (transposing and extending 22 Python lists per line cost twice as much).
    An owner applies from the snapshot that first named its backend identity
    on: each row carries its snapshot's number, each owner the number of the
    snapshot that named it, and the batch masks rows older than their owner.
    """
    columns = list(scan.header.get("columns") or ActivitySample._fields)
    unknown = [name for name in columns if name not in ActivitySample._fields]
    if unknown or "pid" not in columns or "sampled_at" not in columns:
        raise InputError(
            f"{path} has columns this profiler does not know: {unknown or 'no pid/sampled_at'}",
            hint="read it with the profiler version that wrote it",
        )
    pid_at, start_at = columns.index("pid"), columns.index("backend_start")
    owners = _Owners()
    rows: list[tuple[Any, ...]] = []
    taken: list[float] = []
    counts: list[int] = []
    for number, line in _chain(first, lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise InputError(
                f"{path} line {number} is corrupt", hint="the lines before it are intact"
            )
        try:
            kind = record["kind"]
            if kind == "gap":
                scan.gaps.append(_gap(record))
                continue
            if kind != "snapshot":
                continue
            taken_at = datetime.fromisoformat(record["taken_at"]).timestamp()
            snapshot_rows = record["rows"]
            named = record.get("owners")
            if named:
                identity = {row[pid_at]: row[start_at] for row in snapshot_rows}
                for pid_text, owner in named.items():
                    pid = int(pid_text)
                    if pid in identity:
                        owners.add((pid, identity[pid]), owner, len(scan.snapshots))
            rows.extend(map(tuple, snapshot_rows))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InputError(
                f"{path} line {number} is corrupt ({type(exc).__name__}: {exc})",
                hint="the lines before it are intact",
            ) from None
        scan.snapshots.append(taken_at)
        taken.append(taken_at)
        counts.append(len(snapshot_rows))
        if len(rows) >= CHUNK_ROWS:
            yield _batch(path, columns, rows, taken, counts, len(scan.snapshots), owners)
            rows, taken, counts = [], [], []
    if rows:
        yield _batch(path, columns, rows, taken, counts, len(scan.snapshots), owners)


def _chain(
    first: tuple[int, str] | None, rest: Iterator[tuple[int, str]]
) -> Iterator[tuple[int, str]]:
    if first is not None:
        yield first
        yield from rest


def _batch(
    path: Path,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    taken: list[float],
    counts: list[int],
    snapshots_so_far: int,
    owners: _Owners,
) -> pa.RecordBatch:
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    target = schema()
    row_type = pa.struct(
        [
            pa.field(name, pa.string() if name in STRING_COLUMNS else target.field(name).type)
            for name in columns
        ]
    )
    try:
        fields = dict(zip(columns, pa.array(rows, type=row_type).flatten(), strict=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise InputError(
            f"{path} holds a row of the wrong shape or type: {exc}", hint="the file is corrupt"
        ) from None
    arrays = []
    for name in ActivitySample._fields:
        if name not in fields:
            arrays.append(pa.nulls(len(rows), target.field(name).type))
        elif name in STRING_COLUMNS:
            arrays.append(fields[name].dictionary_encode())
        else:
            arrays.append(fields[name])
    taken_at = np.repeat(np.asarray(taken, dtype=np.float64), counts)
    sampled = fields["sampled_at"].to_numpy(zero_copy_only=False)
    # Owners: by identity, from the snapshot that named it on.
    first_snapshot = snapshots_so_far - len(counts)
    snapshot = np.repeat(np.arange(first_snapshot, snapshots_so_far), counts)
    pids = fields["pid"].to_pylist()
    starts = (
        fields["backend_start"].to_pylist() if "backend_start" in fields else [None] * len(rows)
    )
    lookup = owners.by_identity
    if lookup:
        keys = list(zip(pids, starts, strict=True))
        codes = np.asarray([lookup.get(key, -1) for key in keys], dtype=np.int64)
        if owners.changes:
            changed = owners.changes
            for i, key in enumerate(keys):
                if key in changed:
                    codes[i] = owners.latest(key, int(snapshot[i]), int(codes[i]))
    else:
        codes = np.full(len(rows), -1, dtype=np.int64)
    named_at = np.asarray([*owners.named_at, 0], dtype=np.int64)
    known = (codes >= 0) & (named_at[codes] <= snapshot)
    safe = np.where(known, codes, 0)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(taken_at),
            pa.array(taken_at - sampled),
            *arrays,
            _take_int(owners.pids, safe, known),
            _take_text(owners.kinds, safe, known),
            _take_text(owners.cmdlines, safe, known),
            _take_text(owners.vias, safe, known),
            _take_int(owners.ports, safe, known),
        ],
        schema=target,
    )


def _take_int(
    values: list[int | None], codes: np.ndarray[Any, Any], known: np.ndarray[Any, Any]
) -> pa.Array:
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    table = np.asarray([-1 if v is None else v for v in values] or [-1], dtype=np.int64)
    present = np.asarray([v is not None for v in values] or [False])
    mask = ~(known & present[codes])
    return pa.array(table[codes], type=pa.int64(), mask=mask)


def _take_text(
    values: list[str | None], codes: np.ndarray[Any, Any], known: np.ndarray[Any, Any]
) -> pa.Array:
    """Per-row strings of a small per-owner list, as a dictionary array (no string per row)."""
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    dictionary: dict[str, int] = {}
    index = [-1 if v is None else dictionary.setdefault(v, len(dictionary)) for v in values]
    table = np.asarray(index or [-1], dtype=np.int32)
    picked = table[codes]
    mask = ~known | (picked < 0)
    indices = pa.array(np.where(mask, 0, picked).astype(np.int32), type=pa.int32(), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(dictionary), type=pa.string()))


# -- Arrow to pandas -----------------------------------------------------------------------


def _to_pandas(columns: dict[str, pa.ChunkedArray]) -> pd.DataFrame:
    """Column by column, each Arrow column dropped once converted (``columns`` is emptied).

    Dictionary columns become categoricals (chunks' dictionaries unified),
    nullable integers ``Int64``; ``pid`` is plain ``int64``.
    """
    import pandas as pd
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    nullable = {pa.int64(): pd.Int64Dtype()}.get
    series: dict[str, pd.Series[Any]] = {}
    for name in list(columns):
        chunked = columns.pop(name)
        converted: pd.Series[Any] = chunked.to_pandas(types_mapper=nullable)
        del chunked
        if name in NOT_NULL_INTS and not converted.hasnans:
            converted = converted.astype("int64")
        elif name in BOOL_COLUMNS and converted.dtype != bool:
            converted = converted.map(bool).astype(bool)  # null reads as False
        series[name] = converted
    frame: pd.DataFrame = pd.DataFrame(series, copy=False)
    return frame


# -- metadata ------------------------------------------------------------------------------


def _metadata(scan: _Scan) -> dict[str, Any]:
    return {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "header": scan.header,
        "gaps": [
            {
                "started_at": g.started_at.isoformat(),
                "ended_at": g.ended_at.isoformat(),
                "reason": g.reason,
            }
            for g in scan.gaps
        ],
        "snapshots": scan.snapshots,
        "source_bytes": scan.source_bytes,
        "torn_tail": scan.torn_tail,
    }


def _parquet_metadata(path: Path) -> dict[str, Any]:
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    try:
        raw = (pq.read_metadata(path).metadata or {}).get(METADATA_KEY)
        meta = json.loads(raw) if raw else None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint="delete it to read the JSONL") from None
    if not isinstance(meta, dict) or meta.get("format") != TABLE_FORMAT:
        raise InputError(f"{path} is not a {TABLE_FORMAT} file", hint=HINT)
    if meta.get("version") not in _READABLE_VERSIONS:
        raise InputError(
            f"{path} has format version {meta.get('version')}, expected {TABLE_VERSION}",
            hint="read it with the profiler version that wrote it",
        )
    return meta


def _parquet_is_current(columnar: Path, source: Path) -> bool:
    """The Parquet file was made from the JSONL as it is now (or the JSONL is gone)."""
    if not source.exists():
        return True
    try:
        meta = _parquet_metadata(columnar)
    except InputError:
        return False  # unreadable: fall back to the JSONL, which is the original
    return bool(meta.get("source_bytes") == source.stat().st_size)


def _gap(record: dict[str, Any]) -> Gap:
    return Gap(
        datetime.fromisoformat(record["started_at"]),
        datetime.fromisoformat(record["ended_at"]),
        record["reason"],
    )
