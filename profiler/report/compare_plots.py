"""Before and after on the same axes: the comparison page's two plots.

Two sessions' plots side by side with their own scales hide the change (a held session
that peaks at 12 and a fresh one at 2 look alike when each fills its frame). Here both
sessions are lines on one figure, one x range (seconds since each session started) and
one y scale, with the pool cap marked on connections held.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from profiler.model import IDLE_IN_TRANSACTION
from profiler.report import plots

if TYPE_CHECKING:
    import numpy.typing as npt

    from profiler.session.compare import Comparison
    from profiler.session.summary import Summary

COLOURS = {"before": "#c62828", "after": "#1565c0"}
HELD = "compare-connections-held"
IDLE = "compare-idle-in-transaction-age"


def write_compare_plots(comparison: Comparison, directory: Path) -> list[tuple[str, str, str]]:
    """Both plots into ``directory``: ``[(SVG file, title, Plotly figure file)]``."""
    directory.mkdir(parents=True, exist_ok=True)
    sides = {"before": comparison.before, "after": comparison.after}
    series = {label: _held(summary) for label, summary in sides.items()}
    ages = {label: _idle_ages(summary) for label, summary in sides.items()}
    cap = _pool_cap(comparison.before)
    x_end = max([float(x[-1]) for x, _ in (*series.values(), *ages.values()) if x.size] or [1.0])
    drawn = []
    title = "Connections held in a transaction, all workers (before and after)"
    with plots._figure(directory / f"{HELD}.svg") as (_, axes):
        for label, (x, y) in series.items():
            axes.step(x, y, where="post", label=label, color=COLOURS[label], linewidth=1.4)
        if cap is not None:
            axes.axhline(cap, color="#555555", linestyle="--", linewidth=0.8)
            axes.plot([], [], color="#555555", linestyle="--", label=f"pool cap ({cap})")
        axes.legend(loc="upper left", fontsize="small", frameon=False)
        plots._axes(axes, title, "transactions held", x_end=x_end)
        axes.set_ylim(bottom=0)
        plots._integer_ticks(axes)
    drawn.append(
        (f"{HELD}.svg", title, _figure(HELD, title, "transactions", series, x_end, cap, directory))
    )
    title = "Idle-in-transaction age, oldest at each snapshot (before and after)"
    with plots._figure(directory / f"{IDLE}.svg") as (_, axes):
        for label, (x, y) in ages.items():
            axes.plot(x, y, label=label, color=COLOURS[label], linewidth=1.4)
        threshold = comparison.before.thresholds.idle_in_transaction_seconds
        axes.axhline(threshold, color="#555555", linestyle="--", linewidth=0.8)
        axes.plot([], [], color="#555555", linestyle="--", label="threshold")
        axes.legend(loc="upper left", fontsize="small", frameon=False)
        plots._axes(axes, title, "seconds idle in transaction", x_end=x_end)
        axes.set_ylim(bottom=0)
    drawn.append(
        (f"{IDLE}.svg", title, _figure(IDLE, title, "seconds", ages, x_end, threshold, directory))
    )
    return drawn


def _figure(
    name: str,
    title: str,
    unit: str,
    series: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    x_end: float,
    mark: float | None,
    directory: Path,
) -> str:
    """The same plot as a Plotly figure file: one x range, one y scale, both sessions."""
    from profiler.report import timelines

    lines = [
        timelines.Line(
            label, timelines._round(x), timelines._round(y), COLOURS[label], "held" in name
        )
        for label, (x, y) in series.items()
    ]
    label = ""
    if mark is not None:
        label = f"pool cap ({mark:g})" if "held" in name else f"threshold ({mark:g} s)"
    timeline = timelines.Timeline(name, title, unit, lines, x_end, mark, label)
    return timelines.write(timeline, directory)


def _held(summary: Summary) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    held = summary.held
    if held.empty:
        return np.zeros(0), np.zeros(0)
    total = held.groupby("taken_at")["held"].sum().sort_index()
    x = total.index.to_numpy(dtype=np.float64) - summary.session.start
    return x, total.to_numpy(dtype=np.float64)


def _idle_ages(summary: Summary) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    session = summary.session
    activity = session.activity
    times = plots._snapshot_times(activity, session.snapshots)
    if times.size == 0:
        return np.zeros(0), np.zeros(0)
    clients = plots._client_rows(activity)
    idle = clients[clients["state"].isin(IDLE_IN_TRANSACTION).to_numpy(dtype=bool)]
    ages = (idle["sampled_at"].astype(float) - idle["state_change"].astype(float)).clip(lower=0)
    oldest = idle.assign(age=ages).groupby("taken_at")["age"].max()
    values = oldest.reindex(times, fill_value=0.0).to_numpy(dtype=np.float64)
    return times - session.start, values


def _pool_cap(summary: Summary) -> int | None:
    """The pool cap summed over workers, when every worker's is known."""
    caps = [pool.capacity for pool in summary.pools]
    known = [cap for cap in caps if cap is not None]
    return sum(known) if known and len(known) == len(caps) else None
