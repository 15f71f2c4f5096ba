"""Rules about connection pools: workers at their pool cap."""

from __future__ import annotations

import numpy as np

from profiler.analysis.findings.common import (
    _finding,
    _held_series,
    _latest,
    _percent,
    _plural,
    _sample_kinds,
    _seconds,
)
from profiler.analysis.findings.records import Evidence, Finding, Thresholds
from profiler.analysis.stack_kinds import is_pool_wait


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
