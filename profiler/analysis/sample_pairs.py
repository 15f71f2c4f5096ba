"""Which samples fell inside which held transaction, and each one's share of its round.

Every stack-based view of held time (:mod:`profiler.analysis.hold_stacks`: the
stacks during an episode, the hold profile; :mod:`profiler.analysis.attribution`:
held time per task) starts from the same join: a sample belongs to an episode
when it comes from the episode's owner worker while the transaction was seen
open. This module makes that join once, column-wise, so both read the same
pairs and weigh a dump (a py-spy dump, or a round of the task sampler) the
same way.

Pure and vectorised: sort + searchsorted per worker, then one ``repeat``, so
memory and time follow the number of pairs, never episodes x samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from profiler.analysis import task_join
from profiler.analysis.columns import category_codes, epoch_seconds, floats
from profiler.errors import UsageError

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd


@dataclass(frozen=True, slots=True)
class Pairs:
    """Every (episode, sample) with the sample inside the episode, column-wise."""

    episode: npt.NDArray[np.int64]  # episode_id
    code: npt.NDArray[np.int64]  # index into categories
    categories: list[str]
    weight: npt.NDArray[np.float64]  # the pair's share of its dump's interval
    row: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    dump: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


def pair_samples(
    episodes: pd.DataFrame, samples: pd.DataFrame, threads: str, *, by_task: bool = True
) -> Pairs:
    """Every (episode, sample) with the sample in the episode, each pair weighted by its
    share of the dump: 1 / the threads (or tasks) in that dump, or, when some task of the
    dump names the episode's backend in ``backends``, 1 / those tasks (0 for the others;
    ``by_task=False`` leaves that to the caller: :mod:`profiler.analysis.attribution`).
    ``row`` is each pair's sample row in ``samples`` (as given), ``dump`` its dump number.

    Sort + searchsorted per worker, then one ``repeat``: memory and time follow
    the number of pairs, never episodes x samples.
    """
    if threads not in ("all", "active"):
        raise UsageError(f"threads must be 'all' or 'active', not {threads!r}")
    nothing = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros(0, np.float64))
    if episodes.empty or samples.empty:
        return nothing
    if threads == "active" and "active" in samples.columns:
        samples = samples[samples["active"].to_numpy(dtype=bool)]
        if samples.empty:
            return nothing
    when = epoch_seconds(samples["taken_at"])
    worker = samples["worker_pid"].to_numpy(dtype=np.int64)
    code, categories = category_codes(samples["stack"], np.arange(len(samples)))
    order = np.lexsort((when, worker))
    when, worker, code = when[order], worker[order], code[order]
    workers, segment_start = np.unique(worker, return_index=True)
    segment_end = np.append(segment_start[1:], worker.size)
    # threads per dump: samples sharing (worker, taken_at), adjacent after the sort
    dump_start = np.flatnonzero(
        np.concatenate(([True], (np.diff(when) != 0) | (np.diff(worker) != 0)))
    )
    per_dump = np.diff(np.append(dump_start, worker.size))
    share = 1.0 / np.repeat(per_dump, per_dump)

    owner = episodes["owner_pid"].to_numpy(dtype=np.int64, na_value=-1)
    begin = floats(episodes["start"])
    finish = begin + floats(episodes["duration"])  # observed: up to its last sighting
    ids = episodes["episode_id"].to_numpy(dtype=np.int64)
    segment = np.minimum(np.searchsorted(workers, owner), workers.size - 1)
    usable = (owner >= 0) & (workers[segment] == owner) & ~np.isnan(begin) & ~np.isnan(finish)
    low = np.zeros(len(episodes), dtype=np.int64)
    high = np.zeros(len(episodes), dtype=np.int64)
    chosen = np.flatnonzero(usable)
    by_segment = chosen[np.argsort(segment[chosen], kind="stable")]
    bounds = np.flatnonzero(np.diff(segment[by_segment])) + 1
    for group in np.split(by_segment, bounds):
        if group.size == 0:
            continue
        a, b = segment_start[segment[group[0]]], segment_end[segment[group[0]]]
        low[group] = a + np.searchsorted(when[a:b], begin[group], side="left")
        high[group] = a + np.searchsorted(when[a:b], finish[group], side="right")
    counts, index = _expand_runs(low, high)
    if index.size == 0:
        return nothing
    episode = np.repeat(ids, counts)
    weight = share[index]
    dump = _dump_ids(dump_start, worker.size)[index]
    if by_task and "backends" in samples.columns:
        weight = _task_weights(episodes, samples, episode, order[index], dump, weight)
    stack_code = code[index]
    keep = (stack_code >= 0) & (weight > 0)
    return Pairs(
        episode[keep],
        stack_code[keep],
        [str(c) for c in categories],
        weight[keep],
        order[index][keep].astype(np.int64),
        dump[keep],
    )


def window_pairs(
    keys: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
    low: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    named: pd.DataFrame,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every (episode, sighting) whose keys match and whose time is in the episode's window:
    the episode's positions and the sighting's rows in ``named``.

    ``keys`` is per episode (worker, value), -1 for none; ``named`` comes from
    :func:`profiler.analysis.task_join.named_long` (``worker_pid``, ``value``,
    ``taken_at``); the window is ``low <= taken_at <= high`` (NaN: none). Keys and
    times become ranks, so one sorted int64 array orders the sightings by (key,
    time) and two ``searchsorted`` find each window's run: memory and time follow
    the pairs, never episodes x sightings of the same key.
    """
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    worker, value = keys
    usable = np.flatnonzero((worker >= 0) & (value >= 0) & ~np.isnan(low) & ~np.isnan(high))
    if named.empty or usable.size == 0:
        return none
    seen_worker = named["worker_pid"].to_numpy(dtype=np.int64)
    seen_value = named["value"].to_numpy(dtype=np.int64)
    when = named["taken_at"].to_numpy(dtype=np.float64)
    pair_keys = np.concatenate(
        [(worker[usable] << 32) | value[usable], (seen_worker << 32) | seen_value]
    )
    key_ranks = np.unique(pair_keys, return_inverse=True)[1].astype(np.int64)
    episode_key, sighting_key = key_ranks[: usable.size], key_ranks[usable.size :]
    times = np.unique(np.concatenate([low[usable], high[usable], when]))
    span = np.int64(times.size + 1)
    ordered = sighting_key * span + np.searchsorted(times, when)
    order = np.argsort(ordered, kind="stable")
    ordered = ordered[order]
    first = np.searchsorted(
        ordered, episode_key * span + np.searchsorted(times, low[usable]), side="left"
    )
    after = np.searchsorted(
        ordered, episode_key * span + np.searchsorted(times, high[usable]), side="right"
    )
    counts, run = _expand_runs(first, after)
    if run.size == 0:
        return none
    return np.repeat(usable, counts).astype(np.int64), order[run].astype(np.int64)


def _expand_runs(
    first: npt.NDArray[np.int64], after: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Each run ``[first[i], after[i])`` of a sorted array, as the length of each run and
    every position of every run in order: one ``repeat``, so the cost is the pairs."""
    counts = np.maximum(after - first, 0)
    starts = np.repeat(first - (np.cumsum(counts) - counts), counts)
    positions: npt.NDArray[np.int64] = np.arange(int(counts.sum()), dtype=np.int64) + starts
    return counts, positions


def _dump_ids(dump_start: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.int64]:
    """Each sorted sample's dump number, from the positions where dumps start."""
    first_of_dump = np.zeros(size, dtype=np.int64)
    first_of_dump[dump_start] = 1
    ids: npt.NDArray[np.int64] = np.cumsum(first_of_dump) - 1
    return ids


def _task_weights(
    episodes: pd.DataFrame,
    samples: pd.DataFrame,
    episode: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    dump: npt.NDArray[np.int64],
    weight: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Pair weights for task samples: per (episode, round), the tasks that named the
    episode's backend share it; failing that, the candidate tasks (requests: those
    with an endpoint); failing that, every task of the round (``weight`` as given).

    ``episode``, ``rows`` (the sample's row in ``samples``) and ``dump`` are
    per pair; a sample's ``backends`` is a tuple of backend PIDs (and ``ports``, when
    present, its connections' client ports: see :mod:`profiler.analysis.task_join`), its
    ``endpoint`` (when the column exists) its request. A round that names no holder
    happens when a connection is held through an object the sampler did not
    reach; the server's own tasks (its main loop, the lifespan) do not hold
    request connections, so they are not blamed while a request could be.
    """
    candidate = (
        samples["endpoint"].notna().to_numpy(dtype=bool)[rows]
        if "endpoint" in samples.columns
        else np.ones(rows.size, dtype=bool)
    )
    position = np.empty(int(episodes["episode_id"].max()) + 1, dtype=np.int64)
    position[episodes["episode_id"].to_numpy(dtype=np.int64)] = np.arange(len(episodes))
    episode_backend = episodes["pid"].to_numpy(dtype=np.int64)[position[episode]]
    episode_port = task_join.episode_ports(episodes)[position[episode]]
    exact = task_join.names_episode(samples, rows, episode_backend, episode_port)
    if not exact.any() and candidate.all():
        return weight
    _, codes = np.unique(episode * (int(dump.max()) + 1) + dump, return_inverse=True)
    refined: npt.NDArray[np.float64] = weight.copy()
    unresolved = np.ones(episode.size, dtype=bool)
    for chosen in (exact, candidate):
        per_group = np.bincount(codes, weights=chosen & unresolved)
        resolved = unresolved & (per_group[codes] > 0)
        refined[resolved] = np.where(chosen[resolved], 1.0 / per_group[codes[resolved]], 0.0)
        unresolved &= ~resolved
    return refined
