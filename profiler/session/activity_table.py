"""An activity recording as one flat columnar table, from its JSONL or its Parquet copy.

One row per backend per snapshot, in the columns of
:mod:`profiler.session.activity_schema`, read by streaming the JSONL
(:mod:`profiler.session.activity_batches`) so an hour at 1,000 backends loads
in seconds. Reading the JSONL again for every analysis would still cost that
each time, so :func:`convert` writes the table as Parquet (zstd) at the end of
a session, with the recording's header, gaps and every snapshot's time in the
file's metadata; :func:`load` prefers that file when it matches the JSONL
beside it. pandas and pyarrow are dependencies of profiler.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import InputError
from profiler.model import Gap
from profiler.session.activity_batches import (
    HINT,
    ScanState,
    gap_from_record,
    scan_batches,
    stream,
)
from profiler.session.activity_schema import schema, to_pandas

if TYPE_CHECKING:
    import pandas as pd

JSONL_NAME = "activity.jsonl"
PARQUET_NAME = "activity.parquet"
TABLE_FORMAT = "profiler-activity-table"
TABLE_VERSION = 3
# Version 1 had no owner_via, version 2 no owner_port: they read with those columns null.
_READABLE_VERSIONS = (1, 2, TABLE_VERSION)
METADATA_KEY = b"profiler"


@dataclass(frozen=True, slots=True)
class ActivityTable:
    """What a recording holds besides its rows: header, gaps, every snapshot's time."""

    frame: pd.DataFrame
    header: dict[str, Any]
    gaps: list[Gap]
    snapshots: list[float]  # every snapshot's taken_at, in file order, empty ones included
    torn_tail: bool = False


def frame_from_jsonl(path: Path) -> pd.DataFrame:
    """The table of an activity JSONL; a torn last line is dropped, anything else corrupt is an
    :class:`~profiler.errors.InputError`."""
    return read_jsonl(path).frame


def read_jsonl(path: Path) -> ActivityTable:
    """:func:`frame_from_jsonl` plus the header, gaps and snapshot times."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    scan, batches = scan_batches(path)
    table = pa.Table.from_batches(list(batches), schema=schema())
    columns = dict(zip(table.column_names, table.columns, strict=True))
    del table  # to_pandas frees each column as it converts it: one copy at a time
    return ActivityTable(to_pandas(columns), scan.header, scan.gaps, scan.snapshots, scan.torn_tail)


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
        scan, batches = scan_batches(jsonl_path)
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
    del table  # to_pandas frees each column as it converts it: one copy at a time
    return ActivityTable(
        to_pandas(columns),
        meta["header"],
        [gap_from_record(g) for g in meta["gaps"]],
        [float(t) for t in meta["snapshots"]],
        bool(meta.get("torn_tail", False)),
    )


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
        return [gap_from_record(g) for g in _parquet_metadata(columnar)["gaps"]]
    if not source.exists():
        return []
    found: list[Gap] = []
    for _, line in stream(source):
        if '"gap"' in line:
            record = json.loads(line)
            if record.get("kind") == "gap":
                found.append(gap_from_record(record))
    return found


# -- the Parquet file's metadata ----------------------------------------------------------


def _metadata(scan: ScanState) -> dict[str, Any]:
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
