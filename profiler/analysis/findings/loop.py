"""Rules about event loops: a loop thread asleep in a pool checkout."""

from __future__ import annotations

from collections import Counter

import numpy as np

from profiler import units
from profiler.analysis.code_paths import short_names
from profiler.analysis.findings.common import (
    _by_code_path,
    _finding,
    _held_series,
    _latest,
    _plural,
    _sample_kinds,
)
from profiler.analysis.findings.records import Evidence, Finding, Thresholds
from profiler.analysis.stack_kinds import is_blocked_on_pool, is_event_loop


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
            f"{rows.size} loop samples ({units.percent(share)}, about "
            f"{units.seconds(share * session_seconds)} of {units.seconds(session_seconds)})"
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
