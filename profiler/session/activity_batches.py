"""An activity recording streamed into Arrow record batches, a chunk of rows at a time.

:mod:`profiler.pg.recording` builds a :class:`~profiler.model.Snapshot` per
line, which is right for ``db watch`` but costs minutes and gigabytes for an
hour at 1,000 backends (3.6 M rows). Here the JSONL is streamed line by line
into Arrow arrays, a chunk at a time, without building a record per row, in
the columns of :mod:`profiler.session.activity_schema`; each row gets the owner
its backend identity had at its snapshot. What is not a row (header, gaps,
every snapshot's time) is gathered in a :class:`ScanState` as the batches are
consumed, for :mod:`profiler.session.activity_table` to keep beside them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import InputError
from profiler.jsonl import LineStream, parse_line
from profiler.model import ActivitySample, Gap
from profiler.pg import recording
from profiler.session.activity_schema import STRING_COLUMNS, schema

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

HINT = "activity recordings come from `profiler session run` or `profiler db watch -o FILE`"
CHUNK_ROWS = 1 << 17  # rows per Arrow batch / Parquet row group: bounded memory while streaming


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
class ScanState:
    """What a scan read besides the rows; filled in as its batches are consumed."""

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


def stream(path: Path) -> LineStream:
    """The lines of an activity recording, its header checked as the first is read."""
    return LineStream(path, recording.FORMAT, recording.VERSION, HINT)


def scan_batches(path: Path) -> tuple[ScanState, Iterator[pa.RecordBatch]]:
    """The scan state (filled in as the batches are consumed) and the batches themselves."""
    scan = ScanState(stream(path))
    lines = iter(scan.stream)
    # Read the header now, so a wrong file fails before any batch is asked for.
    first = next(lines, None)
    return scan, _batches(path, scan, first, lines)


def _batches(
    path: Path,
    scan: ScanState,
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
        record = parse_line(path, number, line)
        try:
            kind = record["kind"]
            if kind == "gap":
                scan.gaps.append(gap_from_record(record))
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


def gap_from_record(record: dict[str, Any]) -> Gap:
    """A ``gap`` line (or its copy in a Parquet file's metadata) as a :class:`Gap`."""
    return Gap(
        datetime.fromisoformat(record["started_at"]),
        datetime.fromisoformat(record["ended_at"]),
        record["reason"],
    )
