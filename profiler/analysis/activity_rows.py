"""Rows of the activity table: which ones hold a transaction for an application, and whose.

The session's activity frame has one row per backend per snapshot
(:mod:`profiler.session.reader`), with the owner the capture side found for it
(``owner_pid``, ``owner_kind``, ``owner_port``, ``owner_cmdline``). Both the
episodes (:mod:`profiler.analysis.episodes`) and the counts over time
(:mod:`profiler.analysis.held_counts`) select rows and read owners the same
way through here: a pooler's pid is never taken for a worker's, and a
snapshot in which nothing was held still counts as a snapshot.

Pure functions over frames: no I/O, no clock (:mod:`profiler.analysis.activity`
reads one :class:`~profiler.model.Snapshot` instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.analysis.columns import floats, is_missing, nullable_ints, values_at

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

CLIENT_BACKEND = "client backend"


def client_backend_rows(activity: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Rows of backends applications opened (``client backend``, or type unknown)."""
    if "backend_type" not in activity.columns:
        return np.ones(len(activity), dtype=bool)
    kind = activity["backend_type"]
    mask = kind.isna() | (kind == CLIENT_BACKEND)
    return mask.to_numpy(dtype=bool)


def snapshot_times(
    activity: pd.DataFrame, snapshots: Sequence[float] | npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64]:
    """Sorted distinct snapshot times: the given ones plus every ``taken_at`` in ``activity``."""
    taken = floats(activity["taken_at"])
    if snapshots is not None and len(snapshots):
        taken = np.concatenate([taken, np.asarray(snapshots, dtype=np.float64)])
    return np.unique(taken[~np.isnan(taken)])


# -- who is a worker ------------------------------------------------------------------------


def not_workers(activity: pd.DataFrame, rows: Any) -> npt.NDArray[np.bool_]:
    """Rows whose owner has a pid but is not a worker (a pooler, by its kind).

    Every rule reads owners through here, so a pooler's pid never becomes a
    "worker" in a finding, a plot or a table. Tables without ``owner_kind``
    (hand-made ones) count every owner as a worker, as before.
    """
    if "owner_kind" not in activity.columns:
        return np.zeros(len(rows), dtype=bool)
    kinds = activity["owner_kind"].iloc[rows]
    mask: npt.NDArray[np.bool_] = (kinds.notna() & ~kinds.isin(["process"])).to_numpy(dtype=bool)
    return mask


def worker_pids(activity: pd.DataFrame, rows: Any) -> npt.NDArray[np.int64]:
    """``owner_pid`` at ``rows``, -1 where unknown or not a worker."""
    owner: npt.NDArray[np.int64] = activity["owner_pid"].to_numpy(dtype=np.int64, na_value=-1)[rows]
    return np.where(not_workers(activity, rows), -1, owner)


def owned_row(
    activity: pd.DataFrame, rows: np.ndarray, first: np.ndarray, last: np.ndarray
) -> np.ndarray:
    """Per episode, the last of its rows whose owner is a worker (a process), else its last row.

    Behind PgBouncer in transaction pooling the owner is read per snapshot, from
    ``SHOW SERVERS`` a moment after ``pg_stat_activity``: a transaction that ends in
    between is seen open with its server already unlinked (owner: the pooler). Its
    worker is the one the earlier snapshots named.
    """
    if "owner_kind" not in activity.columns or rows.size == 0:
        return last
    kinds = activity["owner_kind"].to_numpy(dtype=object)[rows]
    positions = np.where(kinds == "process", np.arange(rows.size), -1)
    best = np.maximum.reduceat(positions, first)
    return np.where(best >= first, best, last)


def worker_pid_series(activity: pd.DataFrame, rows: Any) -> pd.Series[Any]:
    """``owner_pid`` at ``rows`` as nullable ints, ``<NA>`` where not a worker."""
    series = nullable_ints(activity["owner_pid"].iloc[rows])
    series[not_workers(activity, rows)] = None
    return series


def worker_port_series(activity: pd.DataFrame, rows: Any) -> pd.Series[Any]:
    """``owner_port`` at ``rows`` as nullable ints, ``<NA>`` where not a worker or absent."""
    import pandas as pd

    if "owner_port" not in activity.columns:
        nothing: pd.Series[Any] = pd.Series(pd.array([None] * len(rows), dtype="Int64"))
        return nothing
    series = nullable_ints(activity["owner_port"].iloc[rows])
    series[not_workers(activity, rows)] = None
    return series


def owner_labels(activity: pd.DataFrame, rows: Any) -> list[str | None]:
    """``pgbouncer 1234 (pooler)`` for rows owned by a pooler, else None.

    The pooler's name is its executable's (the owner's command line), so the
    analysis needs nothing from the capture side to name it.
    """
    others = not_workers(activity, rows)
    if not others.any():
        return [None] * len(rows)
    kinds = values_at(activity, "owner_kind", rows)
    pids = activity["owner_pid"].iloc[rows].tolist()
    cmdlines = values_at(activity, "owner_cmdline", rows)
    labels: list[str | None] = []
    for i, other in enumerate(others):
        if not other:
            labels.append(None)
            continue
        words = str(cmdlines[i] or "").split()
        name = words[0].rsplit("/", 1)[-1] if words else str(kinds[i])
        pid = pids[i]
        labels.append(f"{name} {int(pid)} ({kinds[i]})" if not is_missing(pid) else str(kinds[i]))
    return labels
