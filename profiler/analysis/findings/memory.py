"""Rules about memory: RSS growth, peaks near the memory limit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from profiler import units
from profiler.analysis.columns import epoch_seconds, floats
from profiler.analysis.findings.common import _finding
from profiler.analysis.findings.records import Evidence, Finding, Thresholds

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd


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
            f"worker {pid} RSS grew {units.size(slope)}/min over {units.seconds(span)} "
            f"({units.size(float(rss[0]))} → {units.size(float(rss[-1]))}, peak {units.size(peak)})"
        )
        if near and limit:
            title += f", {units.percent(peak / limit)} of its {units.size(limit)} memory limit"
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
                f"worker {pid} peaked at {units.size(peak)} RSS, {units.percent(share)} of its "
                f"{units.size(limit)} memory limit",
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
    taken_all = epoch_seconds(rss["taken_at"])
    worker_all = rss["worker_pid"].to_numpy(dtype=np.int64)
    bytes_all = floats(rss["rss_bytes"])
    usable = ~np.isnan(taken_all) & ~np.isnan(bytes_all)
    for pid in np.unique(worker_all[usable]).tolist():
        mine = usable & (worker_all == pid)
        order = np.argsort(taken_all[mine], kind="stable")
        yield int(pid), taken_all[mine][order], bytes_all[mine][order]
