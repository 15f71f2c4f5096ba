"""The activity table's columns: their Arrow types, and how they come out in pandas.

One definition that the JSONL scanner (:mod:`profiler.session.activity_batches`),
the Parquet reader (:mod:`profiler.session.activity_table`) and the empty table
of a session without a recording all build from, so a table reads with the
same columns and dtypes whichever file it came from. Repetitive strings
(state, query, application_name, wait_event, ...) are dictionary-encoded, so
they load as pandas categoricals and a million copies of one query text cost a
million small integers.

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from profiler.model import ActivitySample

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

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


def empty() -> pd.DataFrame:
    """A table with no rows and every column, typed as a loaded one is."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    table = pa.Table.from_batches([], schema=schema())
    return to_pandas(dict(zip(table.column_names, table.columns, strict=True)))


def to_pandas(columns: dict[str, pa.ChunkedArray]) -> pd.DataFrame:
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
