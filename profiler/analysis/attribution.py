"""Who held each connection, from task samples: the exact task ↔ backend join first.

The task sampler records, per round, each asyncio task's frames and the
backend PIDs its frames reach, with their client sockets' ports
(:mod:`profiler.capture.task_log`). A task names a transaction by its backend
PID, or, through PgBouncer (where the PID a client sees is the pooler's
cancel key), by the port of the socket the transaction's owner holds
(:mod:`profiler.analysis.task_join`). A held transaction
(:func:`~profiler.analysis.episodes.held_episodes`) is attributed per round of
its owner worker:

1. ``task``: to the tasks that name its backend in that round; failing that,
   to the task that named it in another round (by ``task_id``: the holder,
   whose locals were not readable in this one, e.g. while it ran), when it
   is in this round. A round of a joined transaction without its holder is
   not attributed at all, rather than to someone else.
2. ``worker-fallback``: only for a transaction no task was ever seen holding,
   the round is shared among the worker's requests (tasks with an endpoint),
   or every task. That is the worker's activity meanwhile, not its holder:
   such stacks are rooted at :data:`FALLBACK_ROOT`, so every table, title and
   flamegraph built from them says so.

Time is bounded by what was observed. A transaction's window runs from its
``start`` to its last sighting (``duration``), extended to the last round in
which its holder task still named the backend (up to ``duration_max``); a
round counts ``interval`` seconds, and a transaction is never given more
than its window: one sighting 0.03 s after ``BEGIN`` is 0.03 s, not a round.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from profiler.analysis import task_join
from profiler.analysis.code_paths import FALLBACK_ROOT
from profiler.analysis.columns import floats
from profiler.analysis.sample_pairs import Pairs, pair_samples, window_pairs

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

TASK, FALLBACK = "task", "worker-fallback"
KINDS = (TASK, FALLBACK)
__all__ = ["FALLBACK", "FALLBACK_ROOT", "KINDS", "TASK", "TaskAttribution", "attribute_tasks"]


@dataclass(frozen=True, slots=True)
class TaskAttribution:
    """Held time by stack, and by transaction.

    ``profile``: milliseconds per stack (fallback stacks rooted at
    :data:`FALLBACK_ROOT`); ``owners``: per stack, the owner PIDs;
    ``kinds``: per episode with weight, ``task`` or ``worker-fallback``;
    ``per_episode``: ``episode_id``, ``stack``, ``millis``, ``kind``, heaviest
    first within an episode; ``millis``: the total per kind.
    """

    profile: Counter[str] = field(default_factory=Counter)
    owners: dict[str, list[int]] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    per_episode: pd.DataFrame | None = None
    millis: dict[str, int] = field(default_factory=dict)


def observed_windows(episodes: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """``episodes`` with ``duration`` extended by what their holder showed after the last
    sighting: the last round in which a task that named the backend while the snapshots
    saw the transaction open still named it. Never past ``duration_max`` (the snapshot
    that found it gone) nor the next transaction of the same backend (a backend runs
    one at a time, and the next request to check the connection out is another task)."""
    import pandas as pd

    if episodes.empty or tasks.empty or "backends" not in tasks.columns:
        return episodes
    tasks = tasks.reset_index(drop=True)
    named = task_join.named_long(tasks, "backends")
    by_port = task_join.named_long(tasks, "ports")
    if named.empty and by_port.empty:
        return episodes
    owner = episodes["owner_pid"].to_numpy(dtype=np.int64, na_value=-1)
    ports = task_join.episode_ports(episodes)
    start = floats(episodes["start"])
    seen = start + floats(episodes["duration"])
    limit = np.minimum(start + floats(episodes["duration_max"]), _next_start(episodes))
    # Only a sighting inside [start, max(seen, limit)] can count; pairing just those keeps
    # memory to the sightings, not every episode x every sample of its backend.
    last = np.fmax(seen, limit)
    by_backend = window_pairs((owner, episodes["pid"].to_numpy(dtype=np.int64)), start, last, named)
    by_client = window_pairs((np.where(ports >= 0, owner, -1), ports), start, last, by_port)
    episode = np.concatenate([by_backend[0], by_client[0]])
    sample = np.concatenate([by_backend[1], by_client[1] + len(named)])
    sightings = pd.concat([named, by_port], ignore_index=True)
    merged = pd.DataFrame(
        {
            "episode_id": episodes["episode_id"].to_numpy(dtype=np.int64)[episode],
            "start": start[episode],
            "seen": seen[episode],
            "limit": limit[episode],
            "taken_at": sightings["taken_at"].to_numpy(dtype=np.float64)[sample],
            "task_id": sightings["task_id"].to_numpy(dtype=np.int64)[sample],
        }
    )
    when = merged["taken_at"].to_numpy(dtype=np.float64)
    inside = (when >= merged["start"].to_numpy()) & (when <= merged["seen"].to_numpy())
    holders = merged.loc[inside, ["episode_id", "task_id"]].drop_duplicates()
    after = merged[(when > merged["seen"].to_numpy()) & (when <= merged["limit"].to_numpy())]
    later = after.merge(holders, on=["episode_id", "task_id"])
    if later.empty:
        return episodes
    latest = later.groupby("episode_id")["taken_at"].max().astype("float64")
    result: pd.DataFrame = episodes.copy()
    last_seen = result["episode_id"].map(latest).to_numpy(dtype=np.float64, na_value=np.nan)
    extended = last_seen - floats(result["start"])
    current = floats(result["duration"])
    result["duration"] = np.where(np.isnan(extended), current, np.maximum(current, extended))
    return result


def _next_start(episodes: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Per episode, the start of the same backend's next transaction (inf for its last)."""
    import pandas as pd

    keyed = pd.DataFrame(
        {
            "pid": episodes["pid"].to_numpy(dtype=np.int64),
            "backend_start": floats(episodes["backend_start"]),
            "start": floats(episodes["start"]),
        }
    ).fillna({"backend_start": -np.inf})
    ordered = keyed.sort_values(["pid", "backend_start", "start"], kind="stable")
    following = ordered.groupby(["pid", "backend_start"])["start"].shift(-1)
    following = following.fillna(np.inf)
    nexts: npt.NDArray[np.float64] = following.reindex(keyed.index).to_numpy(dtype=np.float64)
    return nexts


def attribute_tasks(
    episodes: pd.DataFrame, tasks: pd.DataFrame, *, interval: float
) -> TaskAttribution:
    """Held time attributed from task samples (see the module docstring); ``tasks`` as
    :func:`profiler.capture.task_log.read` gives them, ``interval`` the sampler's."""
    import pandas as pd

    if episodes.empty or tasks.empty:
        return TaskAttribution()
    tasks = tasks.reset_index(drop=True)
    windowed = observed_windows(episodes, tasks)
    pairs = pair_samples(windowed, tasks, "all", by_task=False)
    if pairs.episode.size == 0:
        return TaskAttribution()
    weight, kind = _weights(windowed, tasks, pairs)
    weight = _bounded(windowed, pairs.episode, weight, interval)
    keep = weight > 0
    if not keep.any():
        return TaskAttribution()
    stacks = np.asarray(pairs.categories, dtype=object)[pairs.code[keep]]
    kinds = np.asarray(KINDS, dtype=object)[kind[keep]]
    rooted = np.where(kinds == FALLBACK, FALLBACK_ROOT + ";" + stacks.astype(str), stacks)
    position = _positions(windowed)
    owner = windowed["owner_pid"].to_numpy(dtype=np.int64, na_value=-1)[
        position[pairs.episode[keep]]
    ]
    frame = pd.DataFrame(
        {
            "episode_id": pairs.episode[keep],
            "stack": rooted,
            "kind": kinds,
            "millis": weight[keep] * interval * 1000,
            "owner": owner,
        }
    )
    return _summed(frame)


def _weights(
    episodes: pd.DataFrame, tasks: pd.DataFrame, pairs: Pairs
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per pair: its share of its round, and its kind (an index into :data:`KINDS`)."""
    position = _positions(episodes)
    backend = episodes["pid"].to_numpy(dtype=np.int64)[position[pairs.episode]]
    port = task_join.episode_ports(episodes)[position[pairs.episode]]
    rows = pairs.row
    exact = task_join.names_episode(tasks, rows, backend, port)
    task_id = (
        tasks["task_id"].to_numpy(dtype=np.int64)[rows]
        if "task_id" in tasks.columns
        else np.full(rows.size, -1, dtype=np.int64)
    )
    joined_keys = np.unique(_key(pairs.episode[exact], task_id[exact]))
    holder = np.isin(_key(pairs.episode, task_id), joined_keys) & (task_id >= 0)
    joined_episode = np.isin(pairs.episode, pairs.episode[exact])
    candidate = (
        tasks["endpoint"].notna().to_numpy(dtype=bool)[rows]
        if "endpoint" in tasks.columns
        else np.ones(rows.size, dtype=bool)
    )
    _, group = np.unique(_key(pairs.episode, pairs.dump), return_inverse=True)
    weight = np.zeros(rows.size, dtype=np.float64)
    kind = np.zeros(rows.size, dtype=np.int64)
    open_ = np.ones(rows.size, dtype=bool)
    steps = (  # in order; a round resolved by one step is not looked at again
        (exact, 0),
        (holder, 0),
        (candidate & ~joined_episode, 1),
        (~joined_episode, 1),
    )
    for chosen, label in steps:
        count = np.bincount(group, weights=chosen & open_)
        resolved = open_ & (count[group] > 0)
        picked = resolved & chosen
        weight[picked] = 1.0 / count[group[picked]]
        kind[picked] = label
        open_ &= ~resolved
    return weight, kind


def _bounded(
    episodes: pd.DataFrame,
    episode: npt.NDArray[np.int64],
    weight: npt.NDArray[np.float64],
    interval: float,
) -> npt.NDArray[np.float64]:
    """Weights scaled so no transaction gets more seconds than its observed window."""
    position = _positions(episodes)
    window = floats(episodes["duration"])[position[episode]]
    total = np.bincount(episode, weights=weight)[episode] * interval
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(total > window, np.maximum(window, 0.0) / total, 1.0)
    bounded: npt.NDArray[np.float64] = weight * np.nan_to_num(scale)
    return bounded


def _summed(frame: pd.DataFrame) -> TaskAttribution:
    per_stack = frame.groupby("stack", sort=True)["millis"].sum()
    profile: Counter[str] = Counter(
        {str(stack): round(ms) for stack, ms in per_stack.items() if round(ms) > 0}
    )
    owners: dict[str, list[int]] = {}
    for stack, pids in frame[frame["owner"] >= 0].groupby("stack")["owner"]:
        if str(stack) in profile:
            owners[str(stack)] = sorted({int(pid) for pid in pids})
    per_episode = (
        frame.groupby(["episode_id", "stack", "kind"], sort=False)["millis"].sum().reset_index()
    )
    per_episode = per_episode.sort_values(
        ["episode_id", "millis", "stack"], ascending=[True, False, True], kind="stable"
    ).reset_index(drop=True)
    first = frame.groupby("episode_id")["kind"].first()
    kinds = {
        int(episode): str(kind)
        for episode, kind in zip(first.index.tolist(), first.tolist(), strict=True)
    }
    millis = {str(kind): round(ms) for kind, ms in frame.groupby("kind")["millis"].sum().items()}
    return TaskAttribution(profile, owners, kinds, per_episode, millis)


def _positions(episodes: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Row position of each ``episode_id`` (ids are 0.. but may be a filtered subset)."""
    ids = episodes["episode_id"].to_numpy(dtype=np.int64)
    position = np.zeros(int(ids.max()) + 1 if ids.size else 0, dtype=np.int64)
    position[ids] = np.arange(ids.size)
    return position


def _key(first: npt.NDArray[np.int64], second: npt.NDArray[np.int64]) -> npt.NDArray[np.complex128]:
    """One hashable scalar per pair of int64s (as a complex: exact for values below 2**53)."""
    return first.astype(np.float64) + 1j * second.astype(np.float64)
