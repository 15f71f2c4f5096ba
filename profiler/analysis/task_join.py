"""Whether a task sample names a held transaction: by backend PID, or by its socket's port.

A task's record lists, for each database connection its frames reach, the
backend PID the driver reports and the local port of the connection's TCP
client socket (:mod:`profiler.capture.task_payload`). On a direct connection
the PID is PostgreSQL's backend PID, and the join is exact on it. Behind
PgBouncer it never is: the PID a client sees is PgBouncer's random cancel
key. What both ends do agree on there is the client socket: the worker's end
of its connection to the pooler, whose port PgBouncer's ``SHOW CLIENTS`` shows
and the session records as the backend owner's ``owner_port``. So a task of
worker W naming port P names the transaction owned by (W, P).

Only pairs already inside one episode's window and of its owner worker are
ever tested (:func:`profiler.analysis.sample_pairs.pair_samples`), so a port that a
later connection reuses cannot name an earlier transaction: while a socket is open
its port is its own, and the episode's owner was read while it was open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.analysis.columns import empty_frame, epoch_seconds

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd


def names_episode(
    samples: pd.DataFrame,
    rows: npt.NDArray[np.int64],
    backend: npt.NDArray[np.int64],
    port: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """Per pair: whether the sample at ``rows`` names the pair's episode, whose backend PID
    is ``backend`` and whose owner's client port is ``port`` (-1: none known)."""
    exact = _contains(samples["backends"], rows, backend)
    if "ports" in samples.columns and (port >= 0).any():
        exact |= _contains(samples["ports"], rows, port) & (port >= 0)
    return exact


def episode_ports(episodes: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Each episode's ``owner_port``, -1 where unknown (or the column is absent)."""
    if "owner_port" not in episodes.columns:
        return np.full(len(episodes), -1, dtype=np.int64)
    ports: npt.NDArray[np.int64] = episodes["owner_port"].to_numpy(dtype=np.int64, na_value=-1)
    return ports


def named_long(tasks: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per (worker, time, task, value) a task named in ``column`` (``backends`` or
    ``ports``): ``worker_pid`` (Int64), ``taken_at`` (epoch seconds), ``task_id``, ``value``."""
    import pandas as pd

    if column not in tasks.columns:
        return empty_frame(
            {
                "worker_pid": "Int64",
                "taken_at": "float64",
                "task_id": "int64",
                "value": "int64",
            }
        )
    long = tasks[column].explode().dropna()
    rows = long.index.to_numpy()
    task_id = (
        tasks["task_id"].to_numpy(dtype=np.int64)
        if "task_id" in tasks.columns
        else np.full(len(tasks), -1, dtype=np.int64)
    )
    frame: pd.DataFrame = pd.DataFrame(
        {
            "worker_pid": tasks["worker_pid"].to_numpy(dtype=np.int64)[rows],
            "taken_at": epoch_seconds(tasks["taken_at"])[rows],
            "task_id": task_id[rows],
            "value": long.to_numpy(dtype=np.int64),
        }
    )
    frame["worker_pid"] = frame["worker_pid"].astype("Int64")
    return frame


def _contains(
    column: pd.Series[Any], rows: npt.NDArray[np.int64], wanted: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Per pair i: whether the tuple ``column[rows[i]]`` holds ``wanted[i]``."""
    found = np.zeros(rows.size, dtype=bool)
    long = column.iloc[rows].reset_index(drop=True).explode().dropna()
    if not long.empty:
        at = long.index.to_numpy(dtype=np.int64)
        found[at[long.to_numpy(dtype=np.int64) == wanted[at]]] = True
    return found
