"""Rules about connection pools: workers at their pool cap, and what a pool can serve.

A pool's cap is known three ways, in order of trust:

* ``pool``: read inside the worker by the task sampler (the SQLAlchemy pools'
  ``size``, ``max_overflow``, ``checked_out`` and waiters each round);
* ``told``: ``pool_capacity`` given to ``session run`` (``--pool-capacity``);
* ``unknown``: neither. The most transactions seen at once is then all there
  is, and it is no cap: a healthy worker that once held 2 of its 10 is "at"
  that count whenever it holds 2 again. Such a finding says "pool size
  unknown" and is never critical.

The capacity line turns a pool into a throughput ceiling: a worker whose
requests hold a connection ``H`` seconds on average serves at most ``P / H``
requests per second from a pool of ``P``. ``H`` comes from Little's law when
the load was recorded (mean connections in use / requests per second per
worker), else from the mean transaction held (a lower bound per request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler import units
from profiler.analysis.columns import floats
from profiler.analysis.findings.common import (
    _finding,
    _held_series,
    _latest,
    _plural,
    _sample_kinds,
)
from profiler.analysis.findings.records import Evidence, Finding, Thresholds
from profiler.analysis.stack_kinds import is_pool_wait

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd


@dataclass(frozen=True, slots=True)
class PoolFigures:
    """One worker's pool and the ceiling it puts on throughput.

    ``source``: ``pool`` (read in the worker), ``told`` or ``unknown``;
    ``capacity``: ``size + max_overflow`` (None when unknown or unbounded);
    ``in_use``: mean connections checked out (pool figures) or in a
    transaction (snapshots); ``hold_seconds``: mean connection time per
    request (``hold_basis`` ``request``, Little's law) or per transaction
    (``transaction``); ``max_rps``: ``capacity / hold_seconds``.
    """

    worker_pid: int
    source: str
    pool_class: str | None
    size: int | None
    max_overflow: int | None
    timeout: float | None
    capacity: int | None
    in_use: float | None
    hold_seconds: float | None
    hold_basis: str | None
    max_rps: float | None
    served_rps: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "worker_pid": self.worker_pid,
            "source": self.source,
            "pool_class": self.pool_class,
            "size": self.size,
            "max_overflow": self.max_overflow,
            "timeout": self.timeout,
            "capacity": self.capacity,
            "in_use_mean": _rounded(self.in_use),
            "hold_seconds": _rounded(self.hold_seconds),
            "hold_basis": self.hold_basis,
            "max_rps": _rounded(self.max_rps, 2),
            "served_rps": _rounded(self.served_rps, 2),
        }

    def capacity_text(self) -> str:
        """``pool of 6 (told), mean hold 3.1 s per request → at most 1.9 req/s per worker;
        served 1.1 req/s per worker``."""
        if self.capacity is None:
            pool = (
                "pool size unknown"
                if self.source == "unknown"
                else f"{self.pool_class or 'pool'} without a cap"
            )
        else:
            parts = f"{self.size} + {self.max_overflow} overflow" if self.size is not None else ""
            pool = f"pool of {self.capacity}" + (f" ({parts})" if parts else "")
            pool += " (told)" if self.source == "told" else ""
        if self.hold_seconds is None:
            return pool
        text = f"{pool}, mean hold {units.seconds(self.hold_seconds)} per {self.hold_basis}"
        if self.max_rps is not None:
            unit = "req/s" if self.hold_basis == "request" else "transactions/s"
            text += f" → at most {units.number(self.max_rps)} {unit} per worker"
        if self.served_rps is not None:
            text += f"; served {units.number(self.served_rps)} req/s per worker"
        return text


def pool_figures(evidence: Evidence) -> list[PoolFigures]:
    """Each worker's pool (read, told or unknown) and its throughput ceiling, by pid.

    Workers are the session's targets, else every worker that held a
    transaction or had its pools read.
    """
    pools = evidence.pools
    workers = set(evidence.targets)
    held = evidence.held[evidence.held["owner_pid"].notna()] if not evidence.held.empty else None
    if not workers:
        if held is not None:
            workers.update(held["owner_pid"].astype("int64").tolist())
        if pools is not None and not pools.empty:
            workers.update(pools["worker_pid"].astype("int64").tolist())
    count = len(workers)
    per_worker_rps = (
        evidence.served_rps / count if evidence.served_rps is not None and count else None
    )
    return [_worker_figures(evidence, pid, per_worker_rps) for pid in sorted(workers)]


def _worker_figures(evidence: Evidence, pid: int, served: float | None) -> PoolFigures:
    rounds = _pool_rounds(evidence.pools, pid)
    pool_class = size = overflow = timeout = capacity = None
    in_use: float | None = None
    if rounds is not None:
        source = "pool"
        pool_class, size, overflow, timeout, capacity = (
            rounds.classes,
            rounds.size,
            rounds.max_overflow,
            rounds.timeout,
            rounds.capacity,
        )
        if rounds.in_use.size:
            in_use = float(rounds.in_use.mean())
    elif evidence.pool_capacity is not None:
        source, capacity = "told", evidence.pool_capacity
    else:
        source = "unknown"
    if in_use is None and not evidence.held.empty:
        _, counts = _held_series(evidence.held, pid)
        in_use = float(counts.mean()) if counts.size else None
    hold: float | None = None
    basis: str | None = None
    if served and in_use is not None:
        hold, basis = in_use / served, "request"
    else:
        hold, basis = _mean_transaction(evidence.episodes, pid), "transaction"
    if hold is None or hold <= 0:
        hold, basis = None, None
    max_rps = capacity / hold if capacity is not None and hold else None
    return PoolFigures(
        pid,
        source,
        pool_class,
        size,
        overflow,
        timeout,
        capacity,
        in_use,
        hold,
        basis,
        max_rps,
        served,
    )


@dataclass(frozen=True, slots=True)
class _Rounds:
    """A worker's pools summed per round of the sampler, in time order."""

    taken: npt.NDArray[np.float64]
    in_use: npt.NDArray[np.int64]
    waiting: npt.NDArray[np.int64]
    classes: str
    size: int | None
    max_overflow: int | None
    timeout: float | None
    capacity: int | None  # None: some pool has no cap (NullPool, max_overflow -1)


def _pool_rounds(pools: pd.DataFrame | None, pid: int) -> _Rounds | None:
    """The worker's pool figures per round, or None when none was read for it."""
    if pools is None or pools.empty:
        return None
    mine = pools[(pools["worker_pid"] == pid).to_numpy(dtype=bool)]
    if mine.empty:
        return None
    latest = mine.sort_values("taken_at", kind="stable").drop_duplicates("pool_id", keep="last")
    sizes = latest["size"].to_numpy(dtype=np.float64, na_value=np.nan)
    overflows = latest["max_overflow"].to_numpy(dtype=np.float64, na_value=np.nan)
    bounded = ~np.isnan(sizes) & ~np.isnan(overflows) & (overflows >= 0) & (sizes > 0)
    capacity = int((sizes + overflows).sum()) if bounded.all() else None
    timeouts = latest["timeout"].dropna()
    classes = "+".join(sorted(set(latest["pool_class"].astype(str))))
    known = ~np.isnan(sizes)
    taken = floats(mine["taken_at"])
    unique, inverse = np.unique(taken, return_inverse=True)
    checked = mine["checked_out"].to_numpy(dtype=np.float64, na_value=0.0)
    waiting = mine["waiting"].to_numpy(dtype=np.float64, na_value=0.0)
    return _Rounds(
        taken=unique,
        in_use=np.bincount(inverse, weights=checked, minlength=unique.size).astype(np.int64),
        waiting=np.bincount(inverse, weights=waiting, minlength=unique.size).astype(np.int64),
        classes=classes,
        size=int(sizes[known].sum()) if known.any() else None,
        max_overflow=int(overflows[bounded].sum()) if bounded.any() else None,
        timeout=float(timeouts.max()) if len(timeouts) else None,
        capacity=capacity,
    )


def _mean_transaction(episodes: pd.DataFrame, pid: int) -> float | None:
    if episodes.empty:
        return None
    mine = episodes[(episodes["owner_pid"] == pid).fillna(False).to_numpy(dtype=bool)]
    durations = floats(mine["duration"]) if not mine.empty else np.zeros(0)
    durations = durations[~np.isnan(durations)]
    return float(durations.mean()) if durations.size else None


def pool_saturation(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Workers that sat at their pool's cap for ``saturation_share`` of the time, one
    finding each, with the worker's capacity line.

    With the pool read in the worker: at cap when connections checked out
    reach ``size + max_overflow`` in a round; critical when requests waited for
    a connection meanwhile (the pool's waiters, or stack samples in a
    checkout). With a capacity told: at cap when the transactions held at a
    snapshot reach it; critical when stack samples waited. Unknown: the most
    transactions held at once is no cap (needs at least 2, seen twice), and
    the finding says "pool size unknown": a warning when stack samples
    waited for a connection, else info, never critical.
    """
    figures = {f.worker_pid: f for f in pool_figures(evidence)}
    sample_worker, sample_time, (sample_wait,) = _sample_kinds(evidence.wait_samples, is_pool_wait)
    found = []
    for pid, worker in figures.items():
        theirs = sample_worker == pid
        times, waits = sample_time[theirs], sample_wait[theirs]
        rounds = _pool_rounds(evidence.pools, pid)
        if rounds is not None:
            finding = _read_pool(evidence, thresholds, worker, rounds, times, waits)
        else:
            finding = _held_pool(evidence, thresholds, worker, times, waits)
        if finding is not None:
            found.append(finding)
    return found


def _read_pool(
    evidence: Evidence,
    thresholds: Thresholds,
    worker: PoolFigures,
    rounds: _Rounds,
    times: npt.NDArray[np.float64],
    waits: npt.NDArray[np.bool_],
) -> Finding | None:
    """At cap from the pool figures read in the worker, round by round."""
    if worker.capacity is None or rounds.taken.size == 0:
        return None
    at_cap = rounds.in_use >= worker.capacity
    count = int(at_cap.sum())
    share = count / rounds.taken.size
    if count == 0 or share < thresholds.saturation_share:
        return None
    seconds_at_cap = _seconds_at(rounds.taken, at_cap, evidence.session_end)
    during = _latest(rounds.taken, at_cap, times, before=False)
    waiting_samples = int((waits & during).sum())
    waiting_rounds = int((rounds.waiting > 0).sum())
    title = (
        f"worker {worker.worker_pid}'s {rounds.classes} at its cap of {worker.capacity} "
        f"({worker.size} + {worker.max_overflow} overflow, read in the worker) for "
        f"{units.percent(share)} of rounds ({units.seconds(seconds_at_cap)})"
    )
    if waiting_rounds:
        title += (
            f"; requests waiting for a connection in {_plural(waiting_rounds, 'round', 'rounds')}"
            f" (up to {int(rounds.waiting.max())} at once)"
        )
    elif waiting_samples:
        title += f"; {_plural(waiting_samples, 'stack sample', 'stack samples')} waiting"
    else:
        title += "; no request seen waiting for a connection"
    title += f"; {worker.capacity_text()}"
    return _finding(
        "pool-saturation",
        "critical" if waiting_rounds or waiting_samples else "warning",
        title,
        {
            "worker_pid": worker.worker_pid,
            "cap": worker.capacity,
            "cap_source": "pool",
            "inferred": False,
            "pool": worker.to_json(),
            "rounds": int(rounds.taken.size),
            "rounds_at_cap": count,
            "share_at_cap": round(share, 4),
            "seconds_at_cap": round(seconds_at_cap, 3),
            "waiting_rounds": waiting_rounds,
            "waiting_max": int(rounds.waiting.max()),
            "samples_at_cap": int(during.sum()),
            "waiting_samples": waiting_samples,
        },
        seconds_at_cap,
    )


def _held_pool(
    evidence: Evidence,
    thresholds: Thresholds,
    worker: PoolFigures,
    times: npt.NDArray[np.float64],
    waits: npt.NDArray[np.bool_],
) -> Finding | None:
    """At cap from the transactions held at each snapshot: a told cap, or none known."""
    if evidence.held.empty:
        return None
    taken, counts = _held_series(evidence.held, worker.worker_pid)
    if taken.size == 0:
        return None
    inferred = worker.capacity is None
    cap = int(counts.max()) if worker.capacity is None else worker.capacity
    at_cap = counts >= cap
    snapshots_at_cap = int(at_cap.sum())
    share = snapshots_at_cap / taken.size
    if snapshots_at_cap == 0 or share < thresholds.saturation_share:
        return None
    if inferred and (cap < 2 or snapshots_at_cap < 2):
        return None
    seconds_at_cap = _seconds_at(taken, at_cap, evidence.session_end)
    during = _latest(taken, at_cap, times, before=False)
    samples_at_cap = int(during.sum())
    waiting = int((waits & during).sum())
    pid = worker.worker_pid
    if inferred:
        title = (
            f"worker {pid} held {cap} transactions at once (its most) for {units.percent(share)} "
            f"of snapshots ({units.seconds(seconds_at_cap)}); pool size unknown, so not a cap"
        )
        severity = "warning" if waiting else "info"
    else:
        title = (
            f"worker {pid} at its pool cap of {cap} (told) for {units.percent(share)} of snapshots "
            f"({units.seconds(seconds_at_cap)})"
        )
        severity = "critical" if waiting else "warning"
    if waiting:
        title += f"; {_plural(waiting, 'stack sample', 'stack samples')} waiting for a connection"
    else:
        title += "; no stack sample seen waiting for a connection"
    if worker.hold_seconds is not None:
        title += f"; {worker.capacity_text()}"
    return _finding(
        "pool-saturation",
        severity,
        title,
        {
            "worker_pid": pid,
            "cap": None if inferred else cap,
            "cap_source": worker.source,
            "inferred": inferred,
            "pool": worker.to_json(),
            "max_held": int(counts.max()),
            "snapshots": int(taken.size),
            "snapshots_at_cap": snapshots_at_cap,
            "share_at_cap": round(share, 4),
            "seconds_at_cap": round(seconds_at_cap, 3),
            "samples_at_cap": samples_at_cap,
            "waiting_samples": waiting,
            "waiting_share": (round(waiting / samples_at_cap, 4) if samples_at_cap else None),
        },
        seconds_at_cap,
    )


def _seconds_at(taken: npt.NDArray[np.float64], at: npt.NDArray[np.bool_], end: float) -> float:
    """Seconds from each chosen time to the next one (the session's end after the last)."""
    following = np.append(taken[1:], max(end, float(taken[-1])))
    return float((following - taken)[at].sum())


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)
