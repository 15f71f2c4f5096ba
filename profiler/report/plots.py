"""A session's time series as static SVG plots: same data, same bytes.

A findings page must read offline and diff cleanly once published, so every
plot is an SVG written by matplotlib's SVG backend (through ``Figure``, not
pyplot: no global figure state, no GUI backend) with a fixed hash salt (its
element ids), no date in the metadata, a fixed figure size and text kept as
text (``svg.fonttype: none``: smaller files, selectable labels). The x
axis is seconds since the session started, never a wall-clock time, so two
sessions' plots line up and nothing in a file depends on when it was drawn.

Every line is thinned to at most ``max_points`` points (:func:`thin`) so a
long session cannot make a plot heavy: an hour of 10 ms memray snapshots is
360 k points, which no one can see and which would weigh tens of megabytes.
Each :class:`Plot` says what was thinned, and a plot with nothing to draw is
skipped with the reason, both for the page to say.

matplotlib is imported inside the functions: the CLI imports this module only
when ``profiler report`` runs, and ``profiler --help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.analysis.stats import percentile
from profiler.model import IDLE_IN_TRANSACTION
from profiler.units import MIB

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from profiler.memory.rss import HeapPoint

MAX_POINTS = 2000
"""Points kept per line at most; more are thinned by buckets (:func:`thin`)."""
FIGSIZE = (9.0, 3.4)

LEGEND_ENTRIES = 12  # more workers than this: no legend (the page lists the workers)

STATE_ORDER = (
    "active",
    "idle in transaction",
    "idle in transaction (aborted)",
    "idle",
)
STATE_COLOURS = {
    "active": "#2e7d32",
    "idle in transaction": "#ef6c00",
    "idle in transaction (aborted)": "#c62828",
    "idle": "#9e9e9e",
}
OTHER_COLOURS = ("#5c6bc0", "#8d6e63", "#26a69a", "#ab47bc", "#78909c")

RC: dict[str, Any] = {
    "svg.hashsalt": "profiler",  # ids from a fixed salt, not a random one: same bytes
    "svg.fonttype": "none",  # text as text: smaller, searchable, no glyph paths
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
SVG_METADATA = {"Date": None}  # matplotlib writes the current date otherwise


@dataclass(frozen=True, slots=True)
class Thinned:
    """One line drawn with fewer points than it has."""

    series: str
    points: int
    kept: int
    how: str  # "max" (peaks kept) or "mean" (shares kept)

    def to_json(self) -> dict[str, Any]:
        return {"series": self.series, "points": self.points, "kept": self.kept, "how": self.how}


@dataclass(frozen=True, slots=True)
class Plot:
    """A plot written to ``path``, or skipped (``path`` None) for the ``skipped`` reason."""

    name: str  # the file's stem: connection-states, idle-in-transaction-age, ...
    title: str
    path: Path | None
    skipped: str | None = None
    thinned: list[Thinned] = field(default_factory=list)


def thin(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    max_points: int,
    *,
    how: str = "max",
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """At most ``max_points`` points: consecutive points in equal buckets, one point each.

    Each bucket is drawn at its first ``x`` with the ``max`` of its ``y`` (a
    spike survives thinning, which matters for ages and memory) or the
    ``mean`` (for stacked shares). ``x`` must be sorted.

    >>> x = np.arange(10.0)
    >>> thin(x, x * 2, 5)
    (array([0., 2., 4., 6., 8.]), array([ 2.,  6., 10., 14., 18.]))
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, not {max_points}")
    if x.size <= max_points:
        return x, y
    edges = np.linspace(0, x.size, max_points + 1).astype(np.int64)
    starts = np.unique(edges[:-1])
    reduce = np.maximum if how == "max" else np.add
    values = reduce.reduceat(y, starts)
    if how != "max":
        sizes = np.diff(np.append(starts, x.size))
        values = values / sizes
    return x[starts], values.astype(np.float64)


def write_plots(
    *,
    activity: pd.DataFrame,
    snapshots: Sequence[float],
    held: pd.DataFrame,
    rss: pd.DataFrame,
    heap: Mapping[int, Sequence[HeapPoint]] | None,
    start: float,
    idle_threshold: float,
    directory: Path,
    max_points: int = MAX_POINTS,
) -> list[Plot]:
    """Every plot of a session's report into ``directory``, in page order.

    ``heap``: memray's snapshots per worker PID (:func:`profiler.memory.rss.from_capture`),
    None or empty when no capture was taken. ``start``: the session's start (epoch).
    """
    directory.mkdir(parents=True, exist_ok=True)
    return [
        connection_states(activity, snapshots, start, directory, max_points=max_points),
        idle_in_transaction_age(
            activity, snapshots, start, directory, threshold=idle_threshold, max_points=max_points
        ),
        connections_held(held, start, directory, max_points=max_points),
        rss_per_worker(rss, start, directory, max_points=max_points),
        memray_heap(heap or {}, start, directory, max_points=max_points),
    ]


# -- the plots ------------------------------------------------------------------------------


def connection_states(
    activity: pd.DataFrame,
    snapshots: Sequence[float],
    start: float,
    directory: Path,
    *,
    max_points: int = MAX_POINTS,
) -> Plot:
    """Client connections per state at every snapshot, stacked (an empty snapshot is zeros)."""
    name, title = "connection-states", "Client connections by state"
    clients = _client_rows(activity)
    times = _snapshot_times(activity, snapshots)
    if times.size == 0:
        return Plot(name, title, None, "no pg_stat_activity snapshot was recorded")
    states = clients["state"].astype(object).where(clients["state"].notna(), "unknown")
    counts = (
        clients.assign(state=states.astype(str))
        .groupby(["taken_at", "state"], observed=True)
        .size()
        .unstack(fill_value=0)
        .reindex(times, fill_value=0)
    )
    order = [s for s in STATE_ORDER if s in counts.columns]
    order += sorted(str(s) for s in counts.columns if s not in STATE_ORDER)
    x = times - start
    thinned: list[Thinned] = []
    series: list[npt.NDArray[np.float64]] = []
    shown_x = x
    for state in order:
        y = counts[state].to_numpy(dtype=np.float64)
        shown_x, shown_y = thin(x, y, max_points, how="mean")
        if shown_x.size < x.size:
            thinned.append(Thinned(state, int(x.size), int(shown_x.size), "mean"))
        series.append(shown_y)
    path = directory / f"{name}.svg"
    with _figure(path) as (figure, axes):
        if series:
            colours = [STATE_COLOURS.get(s, _other_colour(i)) for i, s in enumerate(order)]
            axes.stackplot(shown_x, np.vstack(series), labels=order, colors=colours, step="post")
            axes.legend(loc="upper left", fontsize="small", frameon=False)
        else:
            _nothing(axes, "no client connection at any snapshot")
        _axes(axes, title, "connections", x_end=float(x[-1]) if x.size else 0.0)
        _integer_ticks(axes)
        del figure
    return Plot(name, title, path, None, thinned)


def idle_in_transaction_age(
    activity: pd.DataFrame,
    snapshots: Sequence[float],
    start: float,
    directory: Path,
    *,
    threshold: float,
    max_points: int = MAX_POINTS,
) -> Plot:
    """The age of idle-in-transaction periods at each snapshot: the oldest and the p95.

    Age is the server's ``sampled_at - state_change`` (its own clock on both
    sides); a snapshot with none counts 0, so the line drops when they end. The
    p95 is nearest-rank (:func:`~profiler.analysis.stats.percentile`), as in findings.
    """
    name, title = "idle-in-transaction-age", "Idle-in-transaction age"
    times = _snapshot_times(activity, snapshots)
    if times.size == 0:
        return Plot(name, title, None, "no pg_stat_activity snapshot was recorded")
    clients = _client_rows(activity)
    idle = clients[clients["state"].isin(IDLE_IN_TRANSACTION).to_numpy(dtype=bool)]
    ages = (idle["sampled_at"].astype(float) - idle["state_change"].astype(float)).clip(lower=0)
    frame = idle.assign(age=ages)[["taken_at", "age"]].dropna()
    grouped = frame.groupby("taken_at")["age"]
    oldest = grouped.max().reindex(times, fill_value=0.0).to_numpy(dtype=np.float64)
    p95 = (
        grouped.agg(lambda ages: percentile(sorted(ages.tolist()), 95) or 0.0)
        .reindex(times, fill_value=0.0)
        .to_numpy(dtype=np.float64)
    )
    x = times - start
    thinned: list[Thinned] = []
    path = directory / f"{name}.svg"
    with _figure(path) as (_, axes):
        for label, values, colour in (("max", oldest, "#c62828"), ("p95", p95, "#1565c0")):
            shown_x, shown_y = thin(x, values, max_points)
            if shown_x.size < x.size:
                thinned.append(Thinned(label, int(x.size), int(shown_x.size), "max"))
            axes.plot(shown_x, shown_y, label=label, color=colour, linewidth=1.2)
        axes.axhline(threshold, color="#555555", linestyle="--", linewidth=0.8)
        axes.plot([], [], color="#555555", linestyle="--", linewidth=0.8, label="threshold")
        axes.legend(loc="upper left", fontsize="small", frameon=False)
        _axes(axes, title, "seconds idle in transaction", x_end=float(x[-1]))
        axes.set_ylim(bottom=0)
    return Plot(name, title, path, None, thinned)


def connections_held(
    held: pd.DataFrame, start: float, directory: Path, *, max_points: int = MAX_POINTS
) -> Plot:
    """Transactions each worker held at each snapshot (``connections_held``'s frame)."""
    name, title = "connections-held", "Connections held in a transaction, per worker"
    if held.empty:
        return Plot(name, title, None, "no transaction was seen in pg_stat_activity")
    owners = held["owner_pid"]
    lines: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
    for pid in sorted(int(p) for p in owners.dropna().unique()):
        mine = held[(owners == pid).fillna(False).to_numpy(dtype=bool)]
        lines[f"worker {pid}"] = _xy(mine["taken_at"].astype(float) - start, mine["held"])
    unknown = held[owners.isna().to_numpy(dtype=bool)]
    if not unknown.empty:
        lines["owner unknown"] = _xy(unknown["taken_at"].astype(float) - start, unknown["held"])
    return _lines(name, title, "transactions held", lines, directory, max_points, step=True)


def rss_per_worker(
    rss: pd.DataFrame, start: float, directory: Path, *, max_points: int = MAX_POINTS
) -> Plot:
    """Each worker's resident set size over the session, in MiB."""
    name, title = "rss", "Resident memory (RSS) per worker"
    if rss.empty:
        return Plot(name, title, None, "RSS was not sampled in this session")
    seconds = _seconds_since(rss["taken_at"], start)
    lines = {}
    workers = rss["worker_pid"].to_numpy(dtype=np.int64)
    values = rss["rss_bytes"].to_numpy(dtype=np.float64) / MIB
    for pid in np.unique(workers).tolist():
        mine = workers == pid
        lines[f"worker {pid}"] = _sorted(seconds[mine], values[mine])
    return _lines(name, title, "MiB", lines, directory, max_points)


def memray_heap(
    heap: Mapping[int, Sequence[HeapPoint]],
    start: float,
    directory: Path,
    *,
    max_points: int = MAX_POINTS,
) -> Plot:
    """The heap memray tracked in each worker over time, in MiB (from its own snapshots)."""
    name, title = "memray-heap", "Heap tracked by memray, per worker"
    usable = {pid: points for pid, points in heap.items() if points}
    if not usable:
        return Plot(name, title, None, "no memray capture in this session (run it with --mem)")
    lines = {}
    for pid in sorted(usable):
        points = usable[pid]
        x = np.asarray([p.taken_at.timestamp() - start for p in points], dtype=np.float64)
        y = np.asarray([p.heap_bytes / MIB for p in points], dtype=np.float64)
        lines[f"worker {pid}"] = _sorted(x, y)
    return _lines(name, title, "MiB", lines, directory, max_points)


# -- helpers --------------------------------------------------------------------------------


def _lines(
    name: str,
    title: str,
    ylabel: str,
    lines: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    directory: Path,
    max_points: int,
    *,
    step: bool = False,
) -> Plot:
    """One line per series, each thinned by bucket maximum."""
    path = directory / f"{name}.svg"
    thinned: list[Thinned] = []
    x_end = 0.0
    with _figure(path) as (_, axes):
        for label, (x, y) in lines.items():
            shown_x, shown_y = thin(x, y, max_points)
            if shown_x.size < x.size:
                thinned.append(Thinned(label, int(x.size), int(shown_x.size), "max"))
            if step:
                axes.step(shown_x, shown_y, where="post", label=label, linewidth=1.2)
            else:
                axes.plot(shown_x, shown_y, label=label, linewidth=1.2)
            if x.size:
                x_end = max(x_end, float(x[-1]))
        if 0 < len(lines) <= LEGEND_ENTRIES:
            axes.legend(loc="upper left", fontsize="small", frameon=False)
        _axes(axes, title, ylabel, x_end=x_end)
        axes.set_ylim(bottom=0)
        if step:
            _integer_ticks(axes)
    return Plot(name, title, path, None, thinned)


@contextmanager
def _figure(path: Path) -> Iterator[tuple[Figure, Axes]]:
    """A figure of the fixed size under the fixed settings, saved to ``path`` on exit."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # typed keys, dict[str, Any]
        figure = Figure(figsize=FIGSIZE, layout="constrained")
        axes = figure.add_subplot()
        yield figure, axes
        figure.savefig(path, format="svg", metadata=SVG_METADATA)


def _axes(axes: Axes, title: str, ylabel: str, *, x_end: float) -> None:
    axes.set_title(title, loc="left")
    axes.set_xlabel("seconds since the session started")
    axes.set_ylabel(ylabel)
    axes.set_xlim(left=0, right=max(x_end, 1.0))


def _integer_ticks(axes: Axes) -> None:
    """Counts of connections: no tick at 0.5."""
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True))


def _nothing(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="#555")


def _other_colour(index: int) -> str:
    return OTHER_COLOURS[index % len(OTHER_COLOURS)]


def _client_rows(activity: pd.DataFrame) -> pd.DataFrame:
    """Rows of backends clients opened (``client backend``, or type not recorded)."""
    if activity.empty or "backend_type" not in activity.columns:
        return activity
    kind = activity["backend_type"]
    chosen: pd.DataFrame = activity[(kind.isna() | (kind == "client backend")).to_numpy(bool)]
    return chosen


def _snapshot_times(activity: pd.DataFrame, snapshots: Sequence[float]) -> npt.NDArray[np.float64]:
    """Sorted distinct snapshot times: the session's list plus any ``taken_at`` in rows."""
    taken = activity["taken_at"].to_numpy(dtype=np.float64) if not activity.empty else np.zeros(0)
    every = np.concatenate([np.asarray(snapshots, dtype=np.float64), taken])
    return np.unique(every[~np.isnan(every)])


def _seconds_since(series: pd.Series[Any], start: float) -> npt.NDArray[np.float64]:
    """Datetimes (naive read as UTC) or epoch floats, as seconds since ``start``."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        aware = series if series.dt.tz is not None else series.dt.tz_localize("UTC")
        epoch = (aware - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        seconds: npt.NDArray[np.float64] = epoch.to_numpy(dtype=np.float64) - start
        return seconds
    numbers: npt.NDArray[np.float64] = series.to_numpy(dtype=np.float64) - start
    return numbers


def _xy(
    x: pd.Series[Any], y: pd.Series[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return _sorted(x.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64))


def _sorted(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]
