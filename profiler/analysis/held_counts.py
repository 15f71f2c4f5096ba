"""How many transactions each worker held over time, and its memory against that count.

Where :mod:`profiler.analysis.episodes` has one row per transaction, these are
time series: per snapshot, the transactions each owner held
(:func:`connections_held`), and each RSS sample beside the count its worker
held at that moment (:func:`memory_alignment`), so a memory plot or finding
can tell growth that follows held connections from growth that does not.

Pure functions over the session's frames (no I/O, no clock: time comes from
the samples). Times are epoch seconds on our clock; RSS ``taken_at`` may be
datetimes (as the readers give them) or epoch floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from profiler.analysis.activity_rows import client_backend_rows, snapshot_times, worker_pids
from profiler.analysis.columns import empty_frame, epoch_seconds, floats

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

HELD_COLUMNS = ("taken_at", "owner_pid", "held")
ALIGNMENT_COLUMNS = ("taken_at", "worker_pid", "rss_bytes", "held")


def connections_held(
    activity: pd.DataFrame,
    *,
    snapshots: Sequence[float] | npt.NDArray[np.float64] | None = None,
) -> pd.DataFrame:
    """Per snapshot, how many client backends each owner held in a transaction.

    One row per snapshot per owner that held a transaction at any time in the
    recording (``held`` 0 when it held none then), so a count dropping to zero
    is a row, not a missing one. Backends with no known owner count under
    ``owner_pid`` ``<NA>``. Columns: ``taken_at`` (our clock), ``owner_pid``,
    ``held``.
    """
    import pandas as pd

    if activity.empty:
        return empty_held()
    rows = np.flatnonzero(~np.isnan(floats(activity["xact_start"])) & client_backend_rows(activity))
    if rows.size == 0:
        return empty_held()
    snaps = snapshot_times(activity, snapshots)
    taken = floats(activity["taken_at"])[rows]
    owner = worker_pids(activity, rows)
    owners = np.unique(owner)
    at = np.minimum(np.searchsorted(snaps, taken), snaps.size - 1)
    flat = at * owners.size + np.searchsorted(owners, owner)
    held = np.bincount(flat, minlength=snaps.size * owners.size)
    owner_column = np.tile(owners, snaps.size)
    frame: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": np.repeat(snaps, owners.size),
            "owner_pid": pd.array(np.where(owner_column < 0, 0, owner_column), dtype="Int64"),
            "held": held.astype(np.int64),
        }
    )
    frame.loc[owner_column < 0, "owner_pid"] = pd.NA
    return frame


def memory_alignment(held: pd.DataFrame, rss: pd.DataFrame) -> pd.DataFrame:
    """Each RSS sample with the transactions its worker held at the latest snapshot before it.

    ``held`` is :func:`connections_held`'s frame; ``rss`` has ``taken_at``,
    ``worker_pid``, ``rss_bytes``. ``held`` is ``<NA>`` before the first
    snapshot (nothing known yet), 0 for a worker that held nothing at that
    snapshot; after the last snapshot the last count is carried. Columns:
    ``taken_at`` (epoch seconds, our clock), ``worker_pid``, ``rss_bytes``,
    ``held``; in time order.
    """
    import pandas as pd

    if rss.empty:
        return empty_alignment()
    left: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": epoch_seconds(rss["taken_at"]),
            "worker_pid": rss["worker_pid"].to_numpy(dtype=np.int64),
            "rss_bytes": rss["rss_bytes"].to_numpy(dtype=np.int64),
        }
    ).sort_values(["taken_at", "worker_pid"], kind="stable", ignore_index=True)
    known = held[held["owner_pid"].notna()]
    right: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": floats(known["taken_at"]),
            "worker_pid": known["owner_pid"].to_numpy(dtype=np.int64),
            "held": known["held"].to_numpy(dtype=np.int64),
        }
    ).sort_values("taken_at", kind="stable", ignore_index=True)
    merged = pd.merge_asof(left, right, on="taken_at", by="worker_pid", direction="backward")
    counts = merged["held"].astype("Int64")
    if not held.empty:
        first = float(np.min(floats(held["taken_at"])))
        counts = counts.mask(counts.isna() & (merged["taken_at"] >= first), 0)
    merged["held"] = counts
    return merged


# -- empty frames ---------------------------------------------------------------------------


def empty_held() -> pd.DataFrame:
    return empty_frame(
        {
            "taken_at": "float64",
            "owner_pid": "Int64",
            "held": "int64",
        }
    )


def empty_alignment() -> pd.DataFrame:
    return empty_frame(
        {
            "taken_at": "float64",
            "worker_pid": "int64",
            "rss_bytes": "int64",
            "held": "Int64",
        }
    )
