"""Findings: rules with thresholds over a session's evidence, each with the numbers to act on.

Pure functions, no I/O and no clock: the caller computes the
:class:`Evidence` (episodes, counts held, the hold profile, stack samples,
RSS, worker events) and :func:`evaluate` runs every rule over it. Each rule
is its own function returning zero or more :class:`Finding`, listed here in
the order ties within a severity are broken (:data:`RULES`):

* ``worker-vanished``: a worker disappeared; critical when OOM-killed.
* ``held-code-path``: the code paths that held connections longest, when
  some transaction sat idle in transaction beyond the threshold; critical
  when the top path holds half of the held time.
* ``idle-in-transaction``: transactions idle in transaction beyond the
  threshold; critical when one lasted ten times the threshold, or ten did.
* ``pool-saturation``: a worker at its pool cap for a share of snapshots;
  critical when stack samples show threads waiting for a connection.
* ``blocked-event-loop``: a worker's event loop thread asleep in a pool
  checkout (a sync engine under ``async def``), which stops the requests that
  would release a connection; critical when frequent or long.
* ``memory-limit``: a worker's peak RSS near its memory limit; critical.
* ``stuck-query``: one query text left idle in transaction for long; warning.
* ``rss-growth``: a worker's RSS growing steadily; warning, critical near
  its memory limit.

Evidence dicts hold plain Python values only (no numpy scalars, ``None``
rather than NaN), so ``json.dumps(finding.to_json(), allow_nan=False)`` works.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.analysis.code_paths import CodePath, describe, short_names
from profiler.analysis.episodes import _epoch, _floats
from profiler.analysis.stack_kinds import is_blocked_on_pool, is_event_loop, is_pool_wait
from profiler.analysis.stats import percentile

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

SEVERITIES = ("critical", "warning", "info")
RULES = (
    "worker-vanished",
    "held-code-path",
    "idle-in-transaction",
    "pool-saturation",
    "blocked-event-loop",
    "memory-limit",
    "stuck-query",
    "rss-growth",
)
"""Every rule id, in the order ties within a severity are broken."""

QUERY_CHARS = 200  # a normalised query text is cut to this many characters
TITLE_QUERY_CHARS = 60
LISTED = 20  # entries kept in by-owner / by-query lists (the rest are counted)
MIB = 2**20


STUCK_QUERIES_LISTED = 10


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing worth a reader's attention: what, how bad, and the numbers behind it.

    ``score`` ranks findings of one rule and severity (connection-seconds
    involved, bytes per minute, ...); it is not comparable across rules.
    """

    rule: str
    severity: str
    title: str
    evidence: dict[str, Any]
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "title": self.title,
            "evidence": copy.deepcopy(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    idle_in_transaction_seconds: float = 1.0  # an idle-in-tx period longer than this is a finding
    stuck_query_seconds: float = 10.0
    top_paths: int = 5
    saturation_share: float = 0.2  # share of snapshots a worker sat at its cap
    rss_growth_bytes_per_minute: float = 10 * MIB
    rss_growth_min_seconds: float = 30.0  # need this much RSS history to talk about a rate
    memory_limit_share: float = 0.8
    blocked_loop_samples: int = 2  # fewer loop samples asleep in a checkout are no finding
    blocked_loop_share: float = 0.05  # critical from this share of the loop's samples


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True, eq=False)
class Evidence:
    """Everything the rules look at, already computed by the caller.

    ``episodes``: :func:`~profiler.analysis.episodes.held_episodes`;
    ``held``: :func:`~profiler.analysis.episodes.connections_held`;
    ``hold_profile``: :func:`~profiler.analysis.episodes.hold_profile`, in ms
    (typically over the episodes idle in transaction beyond the threshold);
    ``hold_owners``: for each stack of ``hold_profile``, the owner pids of the
    episodes its samples came from (optional); ``wait_samples``: stack
    samples (``worker_pid``, ``taken_at``, ``stack``, ``active``); ``rss``:
    ``taken_at``, ``worker_pid``, ``rss_bytes``; ``workers``: worker events
    (``time``, ``pid``, ``event`` ``appeared``/``vanished``, and for
    vanished ones ``exit``, ``oom_evidence``, ``replacement_pid``,
    ``last_rss_bytes``); ``memory_limits``: worker pid -> cgroup limit in
    bytes; ``pool_capacity``: ``pool_size + max_overflow`` when known, else
    None (inferred per worker). Times are epoch seconds on our clock.
    """

    episodes: pd.DataFrame
    held: pd.DataFrame
    hold_profile: Counter[str]
    wait_samples: pd.DataFrame
    rss: pd.DataFrame
    workers: pd.DataFrame
    memory_limits: dict[int, int]
    pool_capacity: int | None
    session_start: float
    session_end: float
    hold_owners: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def empty(cls, *, session_start: float = 0.0, session_end: float = 0.0) -> Evidence:
        """No rows anywhere: a base to :func:`dataclasses.replace` parts into."""
        import pandas as pd

        from profiler.analysis.episodes import empty_episodes, empty_held

        return cls(
            episodes=empty_episodes(),
            held=empty_held(),
            hold_profile=Counter(),
            wait_samples=pd.DataFrame(
                {
                    "worker_pid": pd.Series([], dtype="int64"),
                    "taken_at": pd.Series([], dtype="float64"),
                    "stack": pd.Series([], dtype="object"),
                    "active": pd.Series([], dtype="bool"),
                }
            ),
            rss=pd.DataFrame(
                {
                    "taken_at": pd.Series([], dtype="float64"),
                    "worker_pid": pd.Series([], dtype="int64"),
                    "rss_bytes": pd.Series([], dtype="int64"),
                }
            ),
            workers=pd.DataFrame(
                {
                    "time": pd.Series([], dtype="float64"),
                    "pid": pd.Series([], dtype="int64"),
                    "event": pd.Series([], dtype="object"),
                    "exit": pd.Series([], dtype="object"),
                    "oom_evidence": pd.Series([], dtype="object"),
                    "replacement_pid": pd.Series([], dtype="Int64"),
                    "last_rss_bytes": pd.Series([], dtype="Int64"),
                }
            ),
            memory_limits={},
            pool_capacity=None,
            session_start=session_start,
            session_end=session_end,
        )


def evaluate(evidence: Evidence, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """All findings, most important first: severity (critical, warning, info), then rule
    priority (:data:`RULES`), then score (highest first), then title."""
    found = [
        *worker_vanished(evidence, thresholds),
        *held_code_path(evidence, thresholds),
        *idle_in_transaction(evidence, thresholds),
        *pool_saturation(evidence, thresholds),
        *blocked_event_loop(evidence, thresholds),
        *memory_limit(evidence, thresholds),
        *stuck_query(evidence, thresholds),
        *rss_growth(evidence, thresholds),
    ]
    return sorted(found, key=_rank)


def _rank(finding: Finding) -> tuple[int, int, float, str]:
    return (
        SEVERITIES.index(finding.severity),
        RULES.index(finding.rule),
        -finding.score,
        finding.title,
    )


# -- rules: transactions --------------------------------------------------------------------


def held_code_path(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """The code paths that held connections longest, from the hold profile.

    Only when some transaction sat idle in transaction beyond the threshold:
    in a healthy session transactions last milliseconds and where they were
    held is not news. Critical when the top path holds half the held time.
    """
    if _idle_beyond(evidence.episodes, thresholds.idle_in_transaction_seconds).empty:
        return []
    paths, ranked, display_of = _by_code_path(evidence.hold_profile)
    millis = Counter(dict(ranked))
    owners: dict[str, set[int]] = {display: set() for display in millis}
    for stack, display in display_of.items():
        owners[display].update(int(pid) for pid in evidence.hold_owners.get(stack, ()))
    total_ms = sum(millis.values())
    if total_ms <= 0:
        return []
    kept = ranked[: max(thresholds.top_paths, 1)]
    listed = [
        {
            "path": display,
            "frames": list(paths[display].frames),
            "downstream": paths[display].downstream,
            "seconds_held": round(ms / 1000, 3),
            "share": round(ms / total_ms, 4),
            "owner_pids": sorted(owners[display]),
        }
        for display, ms in kept
    ]
    endpoints = _by_endpoint(paths, millis, owners, total_ms)
    top_display, top_ms = kept[0]
    share = top_ms / total_ms
    top_owners = sorted(owners[top_display])
    title = (
        f"{short_names(paths[top_display])} held connections {_percent(share)} "
        f"of {_seconds(total_ms / 1000)}"
    )
    if top_owners:
        title += f" ({_workers(top_owners)})"
    if endpoints and endpoints[0]["share"] >= share:
        top = endpoints[0]
        share, top_ms = top["share"], top["seconds_held"] * 1000
        title = (
            f"{top['endpoint']} held connections {_percent(share)} of "
            f"{_seconds(total_ms / 1000)}"
            + (f" ({_workers(top['owner_pids'])})" if top["owner_pids"] else "")
            + ": "
            + "; ".join(f"{_percent(p['share'])} {p['names']}" for p in top["paths"][:3])
        )
    return [
        _finding(
            "held-code-path",
            "critical" if share >= 0.5 else "warning",
            title,
            {
                "paths": listed,
                "paths_total": len(ranked),
                "endpoints": endpoints,
                "total_seconds_held": round(total_ms / 1000, 3),
                "idle_in_transaction_seconds": thresholds.idle_in_transaction_seconds,
            },
            top_ms / 1000,
        )
    ]


def _by_code_path(
    weights: Mapping[str, int],
) -> tuple[dict[str, CodePath], list[tuple[str, int]], dict[str, str]]:
    """Stack weights summed by code path: each path by its display, the displays with
    their sums heaviest first (ties by display), and each stack's display. Stacks
    weighing nothing are left out."""
    paths: dict[str, CodePath] = {}  # by display: a CodePath holds a list, no hash
    sums: Counter[str] = Counter()
    display_of: dict[str, str] = {}
    for stack, weight in weights.items():
        if weight <= 0:
            continue
        path = describe(stack)
        paths.setdefault(path.display, path)
        sums[path.display] += weight
        display_of[stack] = path.display
    return paths, sorted(sums.items(), key=lambda item: (-item[1], item[0])), display_of


def _by_endpoint(
    paths: dict[str, CodePath], millis: Counter[str], owners: dict[str, set[int]], total_ms: float
) -> list[dict[str, Any]]:
    """Held time per request endpoint (task samples name it), each with its paths.

    A request holds its connections from its first query to its end: while
    it resolves dependencies, awaits a downstream call, serialises. Its
    endpoint is what a reader can change, whatever frame it was in.
    """
    grouped: dict[str, list[tuple[str, int]]] = {}
    for display, ms in millis.items():
        endpoint = paths[display].endpoint
        if endpoint is not None:
            grouped.setdefault(endpoint, []).append((display, ms))
    rows: list[dict[str, Any]] = []
    for endpoint, members in grouped.items():
        held_ms = sum(ms for _, ms in members)
        members.sort(key=lambda item: (-item[1], item[0]))
        rows.append(
            {
                "endpoint": endpoint,
                "seconds_held": round(held_ms / 1000, 3),
                "share": round(held_ms / total_ms, 4),
                "owner_pids": sorted({pid for display, _ in members for pid in owners[display]}),
                "paths": [
                    {
                        "path": display,
                        "names": _names_without_endpoint(paths[display]),
                        "share": round(ms / held_ms, 4),
                    }
                    for display, ms in members[:5]
                ],
            }
        )
    rows.sort(key=lambda row: (-row["seconds_held"], row["endpoint"]))
    return rows


def _names_without_endpoint(path: CodePath) -> str:
    return short_names(path._replace(endpoint=None))


def idle_in_transaction(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Transactions that sat idle in transaction longer than the threshold, in one finding.

    Critical when the longest period is ten times the threshold or there are
    ten such transactions or more.
    """
    limit = thresholds.idle_in_transaction_seconds
    idle = _idle_beyond(evidence.episodes, limit)
    if idle.empty:
        return []
    rows = _episode_rows(idle)
    ages = sorted(row.max_idle_age for row in rows)
    count = len(ages)
    longest = ages[-1]
    p50, p95 = percentile(ages, 50), percentile(ages, 95)
    known = [row for row in rows if row.owner_pid is not None]
    unknown = count - len(known)
    still_open = sum(row.open for row in rows)

    by_owner: dict[int, list[_EpisodeRow]] = {}
    for row in known:
        by_owner.setdefault(row.owner_pid or 0, []).append(row)
    owner_order = sorted(
        by_owner.items(),
        key=lambda item: (-len(item[1]), -max(r.max_idle_age for r in item[1]), item[0]),
    )
    owners = [
        {
            "owner_pid": pid,
            "owner_cmdline": next(
                (r.owner_cmdline for r in reversed(group) if r.owner_cmdline), None
            ),
            "episodes": len(group),
            "max_idle_age": round(max(r.max_idle_age for r in group), 3),
            "idle_seconds": round(sum(r.idle_seconds for r in group), 3),
            "open": sum(r.open for r in group),
        }
        for pid, group in owner_order
    ]
    by_query: dict[str | None, list[_EpisodeRow]] = {}
    for row in rows:
        by_query.setdefault(row.query, []).append(row)
    query_order = sorted(
        by_query.items(),
        key=lambda item: (-len(item[1]), -max(r.max_idle_age for r in item[1]), item[0] or ""),
    )
    queries = [
        {
            "query": query,
            "episodes": len(group),
            "max_idle_age": round(max(r.max_idle_age for r in group), 3),
        }
        for query, group in query_order
    ]

    title = (
        f"{_plural(count, 'transaction', 'transactions')} idle in transaction over "
        f"{_seconds(limit)} (p95 {_seconds(p95 or 0.0)}, max {_seconds(longest)})"
    )
    if known:
        title += f" on {_plural(len(by_owner), 'worker', 'workers')}"
    if unknown:
        title += (
            f", {unknown} with {_unknown_owner(rows)}" if known else f", {_unknown_owner(rows)}"
        )
    if still_open:
        title += f"; {still_open} still open"
    critical = longest >= 10 * limit or count >= 10
    return [
        _finding(
            "idle-in-transaction",
            "critical" if critical else "warning",
            title,
            {
                "threshold_seconds": limit,
                "episodes": count,
                "p50_idle_age": _round(p50),
                "p95_idle_age": _round(p95),
                "max_idle_age": round(longest, 3),
                "total_idle_seconds": round(sum(row.idle_seconds for row in rows), 3),
                "still_open": still_open,
                "owner_unknown": unknown,
                "by_owner": owners[:LISTED],
                "owners_total": len(owners),
                "by_query": queries[:LISTED],
                "queries_total": len(queries),
            },
            sum(row.idle_seconds for row in rows),
        )
    ]


def stuck_query(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """One finding per query text (normalised) left idle in transaction for
    ``stuck_query_seconds`` or more, across all its transactions; the
    :data:`STUCK_QUERIES_LISTED` that held longest in total (the
    idle-in-transaction finding counts them all)."""
    limit = thresholds.stuck_query_seconds
    stuck = _idle_beyond(evidence.episodes, limit, inclusive=True)
    if stuck.empty:
        return []
    by_query: dict[str | None, list[_EpisodeRow]] = {}
    for row in _episode_rows(stuck):
        by_query.setdefault(row.query, []).append(row)
    found = []
    for query, group in by_query.items():
        ages = [row.max_idle_age for row in group]
        owners = sorted({row.owner_pid for row in group if row.owner_pid is not None})
        unknown = sum(row.owner_pid is None for row in group)
        low, high = min(ages), max(ages)
        span = (
            _seconds(high)
            if round(low) == round(high)
            else f"{_number(low)}\N{EN DASH}{_seconds(high)}"
        )
        title = (
            f"{_short_query(query)} held idle in transaction {span} in "
            f"{_plural(len(group), 'transaction', 'transactions')}"
        )
        if owners:
            title += f" ({_workers(owners)})"
        elif unknown:
            title += f" ({_unknown_owner(group)})"
        found.append(
            _finding(
                "stuck-query",
                "warning",
                title,
                {
                    "query": query,
                    "threshold_seconds": limit,
                    "episodes": len(group),
                    "min_idle_age": round(low, 3),
                    "max_idle_age": round(high, 3),
                    "idle_seconds": round(sum(row.idle_seconds for row in group), 3),
                    "still_open": sum(row.open for row in group),
                    "owner_pids": owners,
                    "owner_unknown": unknown,
                },
                sum(row.idle_seconds for row in group),
            )
        )
    found.sort(key=lambda finding: (-finding.score, finding.title))
    return found[:STUCK_QUERIES_LISTED]  # an hour of a busy gateway has hundreds


# -- rules: pools ---------------------------------------------------------------------------


def pool_saturation(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Workers that sat at their pool's cap, one finding each; critical when stack samples
    taken meanwhile show threads waiting for a pool connection.

    The cap is ``pool_capacity`` when given, else the most transactions the
    worker was seen holding; an inferred cap needs to be at least 2 and
    reached at two snapshots or more to mean anything. Either way the worker
    must be at its cap for ``saturation_share`` of the snapshots. A sample
    is "at cap" when the worker's latest snapshot at or before it was.
    """
    held = evidence.held
    if held.empty:
        return []
    known = held[held["owner_pid"].notna()]
    if known.empty:
        return []
    sample_worker, sample_time, (sample_wait,) = _sample_kinds(evidence.wait_samples, is_pool_wait)

    found = []
    for pid in np.unique(known["owner_pid"].to_numpy(dtype=np.int64)).tolist():
        taken, counts = _held_series(known, pid)
        inferred = evidence.pool_capacity is None
        cap = int(counts.max()) if evidence.pool_capacity is None else evidence.pool_capacity
        at_cap = counts >= cap
        snapshots_at_cap = int(at_cap.sum())
        share = snapshots_at_cap / taken.size
        if snapshots_at_cap == 0 or share < thresholds.saturation_share:
            continue
        if inferred and (cap < 2 or snapshots_at_cap < 2):
            continue
        following = np.append(taken[1:], max(evidence.session_end, float(taken[-1])))
        seconds_at_cap = float((following - taken)[at_cap].sum())

        theirs = sample_worker == pid
        during = _latest(taken, at_cap, sample_time[theirs], before=False)
        samples_at_cap = int(during.sum())
        waiting = int((sample_wait[theirs] & during).sum())

        cap_text = f"{'inferred ' if inferred else ''}pool cap of {cap}"
        title = (
            f"worker {pid} at its {cap_text} for {_percent(share)} of snapshots "
            f"({_seconds(seconds_at_cap)})"
        )
        if waiting:
            title += (
                f"; {_plural(waiting, 'stack sample', 'stack samples')} waiting for a connection"
            )
        else:
            title += "; no stack sample seen waiting for a connection"
        found.append(
            _finding(
                "pool-saturation",
                "critical" if waiting else "warning",
                title,
                {
                    "worker_pid": pid,
                    "cap": cap,
                    "inferred": inferred,
                    "max_held": int(counts.max()),
                    "snapshots": int(taken.size),
                    "snapshots_at_cap": snapshots_at_cap,
                    "share_at_cap": round(share, 4),
                    "seconds_at_cap": round(seconds_at_cap, 3),
                    "samples_at_cap": samples_at_cap,
                    "waiting_samples": waiting,
                    "waiting_share": (
                        round(waiting / samples_at_cap, 4) if samples_at_cap else None
                    ),
                },
                seconds_at_cap,
            )
        )
    return found


def _sample_kinds(
    samples: pd.DataFrame, *kinds: Callable[[str], bool]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], list[npt.NDArray[np.bool_]]]:
    """Each sample's worker, time (epoch) and, per predicate, whether its stack is of that kind.

    Each distinct stack is classified once: a session repeats few stacks many times.
    """
    import pandas as pd

    if samples.empty:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), [np.zeros(0, bool) for _ in kinds]
    codes, uniques = pd.factorize(samples["stack"])
    valid = codes >= 0
    masks = []
    for kind in kinds:
        per_stack = np.array([kind(str(stack)) for stack in uniques], dtype=bool)
        mask = np.zeros(len(samples), dtype=bool)
        if per_stack.size:
            mask[valid] = per_stack[codes[valid]]
        masks.append(mask)
    return (
        samples["worker_pid"].to_numpy(dtype=np.int64),
        _epoch(samples["taken_at"]),
        masks,
    )


def _held_series(
    held: pd.DataFrame, pid: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """A worker's snapshot times and transactions held then, in time order."""
    mine = held[(held["owner_pid"] == pid).fillna(False).to_numpy(dtype=bool)]
    order = np.argsort(_floats(mine["taken_at"]), kind="stable")
    return _floats(mine["taken_at"])[order], mine["held"].to_numpy(dtype=np.int64)[order]


def _latest(
    taken: npt.NDArray[np.float64],
    values: npt.NDArray[Any],
    times: npt.NDArray[np.float64],
    *,
    before: Any,
) -> npt.NDArray[Any]:
    """Per time, ``values`` at the latest snapshot at or before it; ``before`` ahead of the
    first snapshot."""
    at = np.searchsorted(taken, times, side="right") - 1
    return np.where(at >= 0, values[np.maximum(at, 0)] if values.size else before, before)


def blocked_event_loop(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Workers whose event loop thread slept in a pool checkout, one finding each.

    An ``async def`` handler that uses a sync engine checks connections out on
    the loop thread; when the pool is empty that blocks every coroutine of the
    worker, including the requests that hold the pool's connections and would
    release them. Nothing moves until ``pool_timeout`` ends the wait: with a
    request that holds one connection and asks for a second, that is a
    deadlock bounded only by the timeout. Evidence: the loop thread's stack
    samples asleep under a pool frame (:func:`is_blocked_on_pool`), their
    share of the loop's samples (and that share of the session, in seconds),
    the transactions the worker held meanwhile, and the code paths that asked.
    Critical from ``blocked_loop_share`` of the loop's samples. Samples are
    instants: two blocked ones in a row may be two waits, so no duration "at
    once" is claimed.
    """
    samples = evidence.wait_samples
    worker, taken, (loop, asleep) = _sample_kinds(samples, is_event_loop, is_blocked_on_pool)
    blocked = loop & asleep
    session_seconds = max(evidence.session_end - evidence.session_start, 0.0)
    found = []
    for pid in np.unique(worker[blocked]).tolist():
        rows = np.flatnonzero((worker == pid) & loop)
        mine = blocked[rows]
        count = int(mine.sum())
        if count < thresholds.blocked_loop_samples:
            continue
        share = count / rows.size
        snapshots, counts = _held_series(evidence.held, pid)
        held = _latest(snapshots, counts, taken[rows][mine], before=-1)
        held = held[held >= 0]  # a sample before the worker's first snapshot says nothing
        held_max = int(held.max()) if held.size else None
        paths, ranked, _ = _by_code_path(Counter(str(samples["stack"].iat[r]) for r in rows[mine]))
        top = [(paths[display], n) for display, n in ranked[:3]]
        title = (
            f"worker {pid}'s event loop waited for a pool connection in {count} of "
            f"{rows.size} loop samples ({_percent(share)}, about "
            f"{_seconds(share * session_seconds)} of {_seconds(session_seconds)})"
        )
        if held_max:
            title += f" while holding up to {_plural(held_max, 'transaction', 'transactions')}"
        title += f": {short_names(top[0][0])}"
        found.append(
            _finding(
                "blocked-event-loop",
                "critical" if share >= thresholds.blocked_loop_share else "warning",
                title,
                {
                    "worker_pid": pid,
                    "loop_samples": int(rows.size),
                    "blocked_samples": count,
                    "blocked_share": round(share, 4),
                    "blocked_seconds": round(share * session_seconds, 3),
                    "held_max": held_max,
                    "held_mean": round(float(held.mean()), 3) if held.size else None,
                    "code_paths": [{"path": p.display, "samples": n} for p, n in top],
                },
                share * session_seconds,
            )
        )
    return found


# -- rules: memory --------------------------------------------------------------------------


def rss_growth(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Workers whose RSS grew at ``rss_growth_bytes_per_minute`` or more (least-squares
    slope over at least ``rss_growth_min_seconds`` of samples); critical when the
    worker also came near its memory limit."""
    found = []
    for pid, taken, rss in _rss_by_worker(evidence.rss):
        span = float(taken[-1] - taken[0])
        if taken.size < 2 or span < thresholds.rss_growth_min_seconds or span <= 0:
            continue
        centred = taken - taken.mean()
        slope = float((centred * (rss - rss.mean())).sum() / (centred * centred).sum()) * 60
        if slope < thresholds.rss_growth_bytes_per_minute:
            continue
        peak = float(rss.max())
        limit = evidence.memory_limits.get(pid)
        near = bool(limit) and peak >= thresholds.memory_limit_share * (limit or 0)
        title = (
            f"worker {pid} RSS grew {_bytes(slope)}/min over {_seconds(span)} "
            f"({_bytes(float(rss[0]))} → {_bytes(float(rss[-1]))}, peak {_bytes(peak)})"
        )
        if near and limit:
            title += f", {_percent(peak / limit)} of its {_bytes(limit)} memory limit"
        found.append(
            _finding(
                "rss-growth",
                "critical" if near else "warning",
                title,
                {
                    "worker_pid": pid,
                    "bytes_per_minute": round(slope),
                    "seconds": round(span, 3),
                    "samples": int(taken.size),
                    "start_bytes": int(rss[0]),
                    "end_bytes": int(rss[-1]),
                    "peak_bytes": int(peak),
                    "memory_limit_bytes": limit,
                    "limit_share": round(peak / limit, 4) if limit else None,
                },
                slope,
            )
        )
    return found


def memory_limit(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Workers whose peak RSS reached ``memory_limit_share`` of their memory limit."""
    found = []
    for pid, taken, rss in _rss_by_worker(evidence.rss):
        limit = evidence.memory_limits.get(pid)
        if not limit or limit <= 0:
            continue
        peak_at = int(np.argmax(rss))
        peak = float(rss[peak_at])
        share = peak / limit
        if share < thresholds.memory_limit_share:
            continue
        found.append(
            _finding(
                "memory-limit",
                "critical",
                f"worker {pid} peaked at {_bytes(peak)} RSS, {_percent(share)} of its "
                f"{_bytes(limit)} memory limit",
                {
                    "worker_pid": pid,
                    "peak_bytes": int(peak),
                    "peak_at": round(float(taken[peak_at]), 3),
                    "seconds_into_session": round(
                        float(taken[peak_at]) - evidence.session_start, 3
                    ),
                    "memory_limit_bytes": int(limit),
                    "share": round(share, 4),
                    "threshold_share": thresholds.memory_limit_share,
                },
                share,
            )
        )
    return found


def _rss_by_worker(
    rss: pd.DataFrame,
) -> Iterable[tuple[int, npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Per worker (ascending pid): sample times and RSS bytes, in time order, NaNs dropped."""
    if rss.empty:
        return
    taken_all = _epoch(rss["taken_at"])
    worker_all = rss["worker_pid"].to_numpy(dtype=np.int64)
    bytes_all = _floats(rss["rss_bytes"])
    usable = ~np.isnan(taken_all) & ~np.isnan(bytes_all)
    for pid in np.unique(worker_all[usable]).tolist():
        mine = usable & (worker_all == pid)
        order = np.argsort(taken_all[mine], kind="stable")
        yield int(pid), taken_all[mine][order], bytes_all[mine][order]


# -- rules: workers -------------------------------------------------------------------------

EXIT_TEXT = {"oom-killed": "OOM-killed", "killed": "killed", "exited": "exited"}


def worker_vanished(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Each worker that vanished during the session: critical when OOM-killed."""
    del thresholds  # no threshold: a vanished worker is always news
    events = evidence.workers
    if events.empty or "event" not in events.columns:
        return []
    gone = events[(events["event"] == "vanished").to_numpy(dtype=bool)]
    found = []
    for index in range(len(gone)):
        event = gone.iloc[index]
        pid = int(event["pid"])
        when = float(event["time"])
        exit_kind = _text(event.get("exit")) or "unknown"
        oom = _text(event.get("oom_evidence"))
        replacement = _int(event.get("replacement_pid"))
        last_rss = _int(event.get("last_rss_bytes"))
        details = EXIT_TEXT.get(exit_kind, f"exit {exit_kind}")
        if oom:
            details += f", {oom}"
        title = f"worker {pid} vanished at +{_seconds(when - evidence.session_start)} ({details})"
        title += f"; replaced by {replacement}" if replacement is not None else "; not replaced"
        if last_rss is not None:
            title += f"; last RSS {_bytes(last_rss)}"
        found.append(
            _finding(
                "worker-vanished",
                "critical" if exit_kind == "oom-killed" else "warning",
                title,
                {
                    "worker_pid": pid,
                    "time": when,
                    "seconds_into_session": round(when - evidence.session_start, 3),
                    "exit": exit_kind,
                    "oom_evidence": oom,
                    "replacement_pid": replacement,
                    "last_rss_bytes": last_rss,
                    "memory_limit_bytes": evidence.memory_limits.get(pid),
                },
                evidence.session_end - when,  # earliest first
            )
        )
    return found


# -- episodes as rows -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EpisodeRow:
    owner_pid: int | None
    owner_cmdline: str | None
    owner_label: str | None  # the pooler's "pgbouncer 1234 (pooler)" when no worker is known
    query: str | None  # normalised last_query
    max_idle_age: float
    idle_seconds: float
    open: bool


def _idle_beyond(
    episodes: pd.DataFrame, seconds: float, *, inclusive: bool = False
) -> pd.DataFrame:
    """Episodes whose longest idle-in-transaction period is over (or at least) ``seconds``."""
    if episodes.empty:
        return episodes
    ages = _floats(episodes["max_idle_age"])
    with np.errstate(invalid="ignore"):
        chosen = ages >= seconds if inclusive else ages > seconds
    selected: pd.DataFrame = episodes[chosen & ~np.isnan(ages)]
    return selected


def _episode_rows(episodes: pd.DataFrame) -> list[_EpisodeRow]:
    owners = episodes["owner_pid"].to_numpy(dtype=np.float64, na_value=np.nan)
    cmdlines = _objects(episodes, "owner_cmdline")
    labels = _objects(episodes, "owner_label")
    queries = _objects(episodes, "last_query")
    ages = _floats(episodes["max_idle_age"])
    idle = np.nan_to_num(_floats(episodes["idle_seconds"]))
    still_open = episodes["open"].to_numpy(dtype=bool)
    return [
        _EpisodeRow(
            owner_pid=None if math.isnan(owners[i]) else int(owners[i]),
            owner_cmdline=_text(cmdlines[i]),
            owner_label=_text(labels[i]),
            query=normalise_query(_text(queries[i])),
            max_idle_age=float(ages[i]),
            idle_seconds=float(idle[i]),
            open=bool(still_open[i]),
        )
        for i in range(len(episodes))
    ]


def _objects(frame: pd.DataFrame, name: str) -> list[Any]:
    if name not in frame.columns:
        return [None] * len(frame)
    return frame[name].astype(object).tolist()


def normalise_query(text: str | None) -> str | None:
    """Whitespace collapsed, cut to :data:`QUERY_CHARS` characters (the last one ``…``).

    >>> normalise_query("SELECT  tools.*\\n  FROM tools")
    'SELECT tools.* FROM tools'
    """
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= QUERY_CHARS else flat[: QUERY_CHARS - 1] + "…"


def _short_query(query: str | None) -> str:
    if query is None:
        return "a transaction (query text not seen)"
    if len(query) > TITLE_QUERY_CHARS:
        query = query[: TITLE_QUERY_CHARS - 4].rstrip() + " ..."
    return f"`{query}`"


# -- plain values and text ------------------------------------------------------------------


def _finding(
    rule: str, severity: str, title: str, evidence: dict[str, Any], score: float
) -> Finding:
    plain = _plain(evidence)
    assert isinstance(plain, dict)
    return Finding(rule, severity, title, plain, float(score))


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/NA to None, tuples and sets to lists."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return None if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text(value: Any) -> str | None:
    if value is None or _missing(value):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    if value is None or _missing(value):
        return None
    return int(value)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _number(value: float) -> str:
    """``0.25`` -> ``0.25``, ``3.21`` -> ``3.2``, ``42.4`` -> ``42``."""
    if abs(value) >= 10:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _seconds(value: float) -> str:
    return f"{_number(value)} s"


def _percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def _bytes(value: float) -> str:
    if abs(value) >= 2**30:
        return f"{value / 2**30:.1f} GiB"
    if abs(value) >= MIB:
        return f"{_number(value / MIB)} MiB"
    return f"{value / 1024:.0f} KiB"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _unknown_owner(rows: list[_EpisodeRow]) -> str:
    """``owner unknown``, or ``worker unknown behind pgbouncer 1234 (pooler)``: the pooler
    is named as what it is, never as a worker."""
    labels = sorted({row.owner_label for row in rows if row.owner_pid is None and row.owner_label})
    if not labels:
        return "owner unknown"
    return "worker unknown behind " + ", ".join(labels)


def _workers(pids: list[int]) -> str:
    """``worker 1234``, ``workers 1234, 1235``, ``workers 1, 2, 3, 4, 5 and 2 more``."""
    shown = ", ".join(str(pid) for pid in pids[:5])
    more = f" and {len(pids) - 5} more" if len(pids) > 5 else ""
    return f"{'worker' if len(pids) == 1 else 'workers'} {shown}{more}"
