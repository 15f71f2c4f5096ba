"""Transactions held open, and what the process holding each one was doing meanwhile.

Pure functions over the frames a session reader gives (no I/O, no clock: time
comes from the samples), vectorised so an hour at 1,000 backends (3.6 M
activity rows) and 100 k stack samples correlate in seconds:

* :func:`held_episodes`: each transaction a backend held open, seen across
  snapshots, one row per transaction;
* :func:`stacks_during`: the owning worker's stacks while it held each one;
* :func:`hold_profile`: stacks weighted by connection-seconds held, for a
  flamegraph of "where were we while holding a connection";
* :func:`connections_held`: per snapshot, how many transactions each process held;
* :func:`memory_alignment`: each RSS sample with the count held at that moment.

Times are epoch seconds on our clock. Activity rows carry the server's times
(``xact_start``, ``state_change``, ``sampled_at``) and ``clock_offset``, which
puts them on ours; stack and RSS ``taken_at`` may be datetimes (as the readers
give them) or epoch floats.

What stacks can say about a held connection depends on the worker:

* A threaded (sync) worker runs a request on one thread from start to end; the
  thread holding the connection is usually the one in database or ORM code
  (or in whatever slow call it makes between two statements), so the worker's
  stacks during an episode do show the holder, next to its other threads
  (``threads="active"`` drops the ones py-spy sees waiting).
* An asyncio worker holds a session in a coroutine; while that coroutine is
  suspended at ``await`` (say, awaiting a downstream HTTP call with the
  transaction open) it is on no thread's stack, so py-spy cannot see it at
  all. Stacks during such an episode show what the event loop did meanwhile,
  often nothing (idle in ``select``/``epoll``) or other requests, not the
  holder. Read them as "what else this worker was doing", and find the holder
  from the episode's queries and ``application_name``, or with task-aware
  tooling.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from profiler.analysis import task_join
from profiler.analysis.activity_rows import (
    client_backend_rows,
    owned_row,
    owner_labels,
    snapshot_times,
    worker_pid_series,
    worker_pids,
    worker_port_series,
)
from profiler.analysis.columns import (
    category_codes,
    column_floats,
    epoch_seconds,
    floats,
    values_at,
)
from profiler.errors import UsageError
from profiler.model import IDLE_IN_TRANSACTION

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

Threads = Literal["all", "active"]

QUERIES_KEPT = 5  # distinct query texts kept per episode, most recent first

EPISODE_COLUMNS = (
    "episode_id",
    "pid",
    "backend_start",
    "xact_start",
    "owner_pid",
    "owner_cmdline",
    "owner_via",
    "owner_port",
    "owner_label",
    "start",
    "first_seen",
    "last_seen",
    "end",
    "open",
    "duration",
    "duration_max",
    "idle_seconds",
    "max_idle_age",
    "queries",
    "last_query",
    "application_name",
    "samples",
)
STACKS_DURING_COLUMNS = ("episode_id", "stack", "samples", "share")
HELD_COLUMNS = ("taken_at", "owner_pid", "held")
ALIGNMENT_COLUMNS = ("taken_at", "worker_pid", "rss_bytes", "held")


# -- episodes -------------------------------------------------------------------------------


def held_episodes(
    activity: pd.DataFrame,
    *,
    session_end: float,
    snapshots: Sequence[float] | npt.NDArray[np.float64] | None = None,
) -> pd.DataFrame:
    """Every transaction a client backend held, one row each, in order of start.

    A backend is in a transaction while ``xact_start`` is set (``active``,
    ``idle in transaction``, ``idle in transaction (aborted)``); autovacuum
    and other non-client backends are left out. An episode is keyed by
    ``(pid, backend_start, xact_start)``: the server's own start of the
    transaction, exact whatever our sampling interval, and a pid reused by a
    new backend (another ``backend_start``) is another key. Rows may come in
    any order; gaps in sampling do not split an episode (the key is the same
    on both sides).

    Columns: ``episode_id`` (0.., in order of ``start``); ``pid``,
    ``backend_start``, ``xact_start`` (the key, server clock); ``owner_pid``:
    the worker (``<NA>`` when no local process was found, or when the owner is
    not a worker: a pooler is never one; kept, not dropped), ``owner_cmdline``,
    ``owner_via`` (the pooler the worker was found through, else None),
    ``owner_port`` (the local port of the worker's socket: to the pooler when
    ``owner_via``, which task samples name; ``<NA>`` when unknown or not a worker),
    ``owner_label``: how a table names an owner that is not a worker
    (``pgbouncer 1234 (pooler)``), else None; ``start`` (``xact_start`` on our clock, via the row's
    ``clock_offset``); ``first_seen``, ``last_seen`` (our ``taken_at``);
    ``end``: the first snapshot after ``last_seen``, the one where the
    transaction was gone (an upper bound: it ended between ``last_seen`` and
    ``end``; across a sampling gap that window is the gap), NaN when the
    transaction was still open at the last snapshot (``open`` True);
    ``duration``: what was observed of it, ``last_seen`` minus ``start`` (a
    lower bound: a transaction seen in one snapshot 0.03 s after it began
    held 0.03 s as far as anyone knows, not the snapshot interval);
    ``duration_max``: ``end`` (or ``session_end`` when open) minus ``start``,
    the upper bound;
    ``idle_seconds``: time spent idle in the transaction as the server
    measured it: per idle period (one ``state_change``) its longest age seen,
    summed; a lower bound, exact at the start of each period;
    ``max_idle_age``: the longest of those (NaN if never seen idle);
    ``queries``: distinct query texts seen, most recent first, at most
    :data:`QUERIES_KEPT`; ``last_query``, ``application_name``: from the last
    row seen; ``samples``: rows seen.

    ``snapshots``: every snapshot's time (``Session.snapshots``), so an empty
    snapshot still ends an episode; by default the distinct ``taken_at`` of
    ``activity``. ``session_end``: epoch seconds, our clock.
    """
    import pandas as pd

    if activity.empty:
        return empty_episodes()
    xact_all = floats(activity["xact_start"])
    rows = np.flatnonzero(~np.isnan(xact_all) & client_backend_rows(activity))
    if rows.size == 0:
        return empty_episodes()
    snaps = snapshot_times(activity, snapshots)

    pid = activity["pid"].to_numpy(dtype=np.int64)[rows]
    backend_start = floats(activity["backend_start"])[rows]
    start_key = np.where(np.isnan(backend_start), -np.inf, backend_start)
    xact = xact_all[rows]
    taken = floats(activity["taken_at"])[rows]
    order = np.lexsort((taken, xact, start_key, pid))
    rows, pid = rows[order], pid[order]
    backend_start, start_key = backend_start[order], start_key[order]
    xact, taken = xact[order], taken[order]
    n = rows.size
    new = np.ones(n, dtype=bool)
    new[1:] = (pid[1:] != pid[:-1]) | (start_key[1:] != start_key[:-1]) | (xact[1:] != xact[:-1])
    episode = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, n - 1)
    count = first.size

    offset = column_floats(activity, "clock_offset", 0.0)[rows]
    start = xact[first] + offset[first]
    first_seen, last_seen = taken[first], taken[last]
    following = np.searchsorted(snaps, last_seen, side="right")
    still_open = following >= snaps.size
    end = np.where(still_open, np.nan, snaps[np.minimum(following, snaps.size - 1)])
    duration = np.maximum(last_seen - start, 0.0)
    duration_max = np.where(still_open, session_end, end) - start

    owned = owned_row(activity, rows, first, last)
    idle_seconds, max_idle_age = _idle(activity, rows, episode, count)
    queries, last_query = _queries(activity["query"], rows, episode, last, count)

    frame: pd.DataFrame = pd.DataFrame(
        {
            "pid": pid[first],
            "backend_start": backend_start[first],
            "xact_start": xact[first],
            "owner_pid": worker_pid_series(activity, rows[owned]),
            "owner_cmdline": values_at(activity, "owner_cmdline", rows[owned]),
            "owner_via": values_at(activity, "owner_via", rows[owned]),
            "owner_port": worker_port_series(activity, rows[owned]),
            "owner_label": owner_labels(activity, rows[owned]),
            "start": start,
            "first_seen": first_seen,
            "last_seen": last_seen,
            "end": end,
            "open": still_open,
            "duration": duration,
            "duration_max": duration_max,
            "idle_seconds": idle_seconds,
            "max_idle_age": max_idle_age,
            "queries": queries,
            "last_query": last_query,
            "application_name": values_at(activity, "application_name", rows[last]),
            "samples": (last - first + 1).astype(np.int64),
        }
    )
    frame = frame.sort_values(["start", "pid", "backend_start"], kind="stable", ignore_index=True)
    frame.insert(0, "episode_id", np.arange(len(frame), dtype=np.int64))
    return frame


def _idle(
    activity: pd.DataFrame, rows: Any, episode: Any, count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per episode: the idle-in-transaction time the server measured, and its longest period."""
    idle_seconds = np.zeros(count)
    max_idle_age = np.full(count, np.nan)
    idle = activity["state"].isin(IDLE_IN_TRANSACTION).to_numpy(dtype=bool)[rows]
    changed = floats(activity["state_change"])[rows]
    sampled = floats(activity["sampled_at"])[rows]
    chosen = idle & ~np.isnan(changed)
    if not chosen.any():
        return idle_seconds, max_idle_age
    ep, changed, age = episode[chosen], changed[chosen], np.maximum(sampled - changed, 0.0)[chosen]
    order = np.lexsort((changed, ep))
    ep, changed, age = ep[order], changed[order], age[order]
    period = np.ones(ep.size, dtype=bool)  # one idle period: one (episode, state_change)
    period[1:] = (ep[1:] != ep[:-1]) | (changed[1:] != changed[:-1])
    starts = np.flatnonzero(period)
    longest = np.maximum.reduceat(age, starts)
    period_ep = ep[starts]
    idle_seconds = np.bincount(period_ep, weights=longest, minlength=count).astype(np.float64)
    firsts = np.flatnonzero(np.append(True, period_ep[1:] != period_ep[:-1]))
    max_idle_age[period_ep[firsts]] = np.maximum.reduceat(longest, firsts)
    return idle_seconds, max_idle_age


def _queries(
    column: pd.Series[Any], rows: Any, episode: Any, last: Any, count: int
) -> tuple[list[tuple[str, ...]], list[str | None]]:
    """Distinct texts per episode (most recent first, capped) and the last row's text."""
    import pandas as pd

    codes, texts = category_codes(column, rows)
    categories: list[str | None] = [None if pd.isna(t) else str(t) for t in texts]
    last_code = codes[last]
    last_query = [categories[c] if c >= 0 else None for c in last_code.tolist()]
    queries: list[list[str]] = [[] for _ in range(count)]
    valid = codes >= 0
    if valid.any() and categories:
        width = np.int64(len(categories))
        position = np.arange(codes.size)[valid]
        pair = episode[valid].astype(np.int64) * width + codes[valid]
        # Last occurrence of each (episode, text): first one in the reversed order.
        unique, at = np.unique(pair[::-1], return_index=True)
        seen_last = position[::-1][at]
        pair_ep, pair_code = unique // width, unique % width
        order = np.lexsort((-seen_last, pair_ep))
        pair_ep, pair_code = pair_ep[order], pair_code[order]
        rank = np.arange(pair_ep.size) - np.searchsorted(pair_ep, pair_ep, side="left")
        kept = rank < QUERIES_KEPT
        for ep, code in zip(pair_ep[kept].tolist(), pair_code[kept].tolist(), strict=True):
            text = categories[code]
            if text is not None:
                queries[ep].append(text)
    return [tuple(q) for q in queries], last_query


# -- stacks ---------------------------------------------------------------------------------


def stacks_during(
    episodes: pd.DataFrame, samples: pd.DataFrame, *, threads: Threads = "all"
) -> pd.DataFrame:
    """The owning worker's stacks during each episode, folded.

    A sample belongs to an episode when its ``worker_pid`` is the episode's
    ``owner_pid`` and ``start <= taken_at <= start + duration``: while the
    transaction was seen open (after its last sighting it may have ended at
    once; ``end`` is only an upper bound). Episodes without an owner,
    or without samples, have no rows. ``threads="active"`` keeps only samples
    py-spy saw running (``active``).

    Columns: ``episode_id``, ``stack`` (collapsed, outermost first),
    ``samples``, ``share`` (of the episode's samples); heaviest first within
    an episode.

    What can be attributed: for a threaded (sync) worker the holder is usually
    the thread in database code; for an asyncio worker a coroutine suspended
    at ``await`` while holding a session is on no thread's stack, so these are
    the event loop's other work (often idle in ``select``), not the holder's.
    See the module docstring.
    """
    import pandas as pd

    pairs = _pairs(episodes, samples, threads)
    episode, code, categories = pairs.episode, pairs.code, pairs.categories
    if episode.size == 0:
        return empty_stacks_during()
    width = np.int64(len(categories))
    unique, counts = np.unique(episode * width + code, return_counts=True)
    pair_ep, pair_code = unique // width, unique % width
    totals = np.bincount(episode)
    alphabetical = np.argsort(np.argsort(np.asarray(categories, dtype=object)))
    order = np.lexsort((alphabetical[pair_code], -counts, pair_ep))
    pair_ep, pair_code, counts = pair_ep[order], pair_code[order], counts[order]
    frame: pd.DataFrame = pd.DataFrame(
        {
            "episode_id": pair_ep,
            "stack": pd.Categorical.from_codes(pair_code, categories=pd.Index(categories)),
            "samples": counts.astype(np.int64),
            "share": counts / totals[pair_ep],
        }
    )
    return frame


def hold_profile(
    episodes: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    interval: float,
    threads: Threads = "all",
) -> Counter[str]:
    """Stacks weighted by connection time held, in milliseconds (flamegraphs want integers).

    Each dump of a worker inside one of its episodes counts ``interval``
    seconds (the dump interval) for each of that worker's episodes open at
    that instant, shared equally among the threads that dump saw (so a
    worker's total is its connection-seconds held, whatever its thread
    count): a one-thread worker holding 4 connections while in stack S
    accrues 4x ``interval`` on S.

    Task samples (:mod:`profiler.capture.tasks`: one row per asyncio task,
    with the ``backends`` its frames referenced) are samples too: a task
    is a "thread" of its round. When, in one round, some task names the
    episode's backend, the episode's time goes to those tasks alone (exact
    attribution); otherwise it is shared among every task of the round.

    The result renders with :func:`profiler.render.flamegraph.render_svg`
    (``unit="ms held"``). Without task samples, the limits of
    :func:`stacks_during` hold: for asyncio workers the weight lands on
    whatever the loop did while the holder was suspended.
    """
    return hold_attribution(episodes, samples, interval=interval, threads=threads)[0]


def hold_attribution(
    episodes: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    interval: float,
    threads: Threads = "all",
) -> tuple[Counter[str], dict[str, list[int]]]:
    """:func:`hold_profile`, and for each of its stacks the owner PIDs whose episodes gave it
    weight (a finding names the workers, not only the code)."""
    if not interval > 0:
        raise UsageError(
            f"interval must be positive, not {interval}", hint="pass the dump interval"
        )
    pairs = _pairs(episodes, samples, threads)
    profile: Counter[str] = Counter()
    owners: dict[str, list[int]] = {}
    if pairs.episode.size == 0:
        return profile, owners
    categories = pairs.categories
    counts = np.bincount(pairs.code, weights=pairs.weight, minlength=len(categories))
    owner = episodes["owner_pid"].to_numpy(dtype=np.int64, na_value=-1)[pairs.episode]
    width = np.int64(max(int(owner.max()), 0) + 2)  # one int64 key per (stack, owner):
    keys = np.unique(pairs.code * width + (owner + 1))  # 20x faster than unique(axis=1)
    by_code = np.stack([keys // width, keys % width - 1])
    for index in np.flatnonzero(counts):
        millis = round(float(counts[index]) * interval * 1000)
        if millis > 0:
            profile[categories[index]] = millis
    for code, pid in by_code.T.tolist():
        stack = categories[code]
        if stack in profile and pid >= 0:
            owners.setdefault(stack, []).append(int(pid))
    return profile, owners


@dataclass(frozen=True, slots=True)
class _Pairs:
    """Every (episode, sample) with the sample inside the episode, column-wise."""

    episode: npt.NDArray[np.int64]  # episode_id
    code: npt.NDArray[np.int64]  # index into categories
    categories: list[str]
    weight: npt.NDArray[np.float64]  # the pair's share of its dump's interval
    row: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    dump: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


def _pairs(
    episodes: pd.DataFrame, samples: pd.DataFrame, threads: str, *, by_task: bool = True
) -> _Pairs:
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
    nothing = _Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros(0, np.float64))
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
    counts = np.maximum(high - low, 0)
    total = int(counts.sum())
    if total == 0:
        return nothing
    episode = np.repeat(ids, counts)
    index = np.arange(total, dtype=np.int64) + np.repeat(low - (np.cumsum(counts) - counts), counts)
    weight = share[index]
    dump = _dump_ids(dump_start, worker.size)[index]
    if by_task and "backends" in samples.columns:
        weight = _task_weights(episodes, samples, episode, order[index], dump, weight)
    stack_code = code[index]
    keep = (stack_code >= 0) & (weight > 0)
    return _Pairs(
        episode[keep],
        stack_code[keep],
        [str(c) for c in categories],
        weight[keep],
        order[index][keep].astype(np.int64),
        dump[keep],
    )


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


# -- counts over time -----------------------------------------------------------------------


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


def empty_episodes() -> pd.DataFrame:
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(
        {
            "episode_id": pd.Series([], dtype="int64"),
            "pid": pd.Series([], dtype="int64"),
            "backend_start": pd.Series([], dtype="float64"),
            "xact_start": pd.Series([], dtype="float64"),
            "owner_pid": pd.Series([], dtype="Int64"),
            "owner_cmdline": pd.Series([], dtype="object"),
            "owner_via": pd.Series([], dtype="object"),
            "owner_port": pd.Series([], dtype="Int64"),
            "owner_label": pd.Series([], dtype="object"),
            "start": pd.Series([], dtype="float64"),
            "first_seen": pd.Series([], dtype="float64"),
            "last_seen": pd.Series([], dtype="float64"),
            "end": pd.Series([], dtype="float64"),
            "open": pd.Series([], dtype="bool"),
            "duration": pd.Series([], dtype="float64"),
            "duration_max": pd.Series([], dtype="float64"),
            "idle_seconds": pd.Series([], dtype="float64"),
            "max_idle_age": pd.Series([], dtype="float64"),
            "queries": pd.Series([], dtype="object"),
            "last_query": pd.Series([], dtype="object"),
            "application_name": pd.Series([], dtype="object"),
            "samples": pd.Series([], dtype="int64"),
        }
    )
    return frame


def empty_stacks_during() -> pd.DataFrame:
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(
        {
            "episode_id": pd.Series([], dtype="int64"),
            "stack": pd.Categorical([]),
            "samples": pd.Series([], dtype="int64"),
            "share": pd.Series([], dtype="float64"),
        }
    )
    return frame


def empty_held() -> pd.DataFrame:
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": pd.Series([], dtype="float64"),
            "owner_pid": pd.Series([], dtype="Int64"),
            "held": pd.Series([], dtype="int64"),
        }
    )
    return frame


def empty_alignment() -> pd.DataFrame:
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": pd.Series([], dtype="float64"),
            "worker_pid": pd.Series([], dtype="int64"),
            "rss_bytes": pd.Series([], dtype="int64"),
            "held": pd.Series([], dtype="Int64"),
        }
    )
    return frame
