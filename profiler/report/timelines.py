"""Interactive timelines: Plotly figure files the site draws, the SVG plots their fallback.

A figure file is the JSON Plotly's ``newPlot`` takes (``data`` and ``layout``), written
beside the page's SVGs and drawn by ``timelines.js`` (shipped once per site with
``plotly.min.js``, :mod:`profiler.report.site_scripts`). Built as plain dicts, not with
Plotly's Python API: the files are small, deterministic, and the same on any machine.

Every figure of one page shares its x range (the session, in seconds since it started) so
the eye can go from one plot to the next; each marks the load window (``load.json``) and,
on connections held, the pool cap. Hover shows each point's value with its unit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.model import IDLE_IN_TRANSACTION
from profiler.report import plots

if TYPE_CHECKING:
    import numpy.typing as npt

    from profiler.session.summary import Summary

COLOURS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f")
MARK = "#555555"
LOAD_FILL = "rgba(255, 193, 7, 0.15)"
SIDES = {"before": "#c62828", "after": "#1565c0"}


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    x: list[float]
    y: list[float]
    colour: str
    step: bool = False


@dataclass(frozen=True, slots=True)
class Timeline:
    """One interactive plot: ``name`` is the stem its SVG fallback shares."""

    name: str
    title: str
    unit: str  # the y values' unit, in hover text and on the axis
    lines: list[Line]
    x_end: float
    cap: float | None = None
    cap_label: str = ""
    load_window: tuple[float, float] | None = None

    def figure(self) -> dict[str, Any]:
        hover = f"%{{y:.3~f}} {self.unit} at %{{x:.1f}} s<extra>%{{fullData.name}}</extra>"
        data: list[dict[str, Any]] = [
            {
                "type": "scatter",
                "mode": "lines+markers" if len(line.x) <= 200 else "lines",
                "name": line.name,
                "x": line.x,
                "y": line.y,
                "line": {
                    "color": line.colour,
                    "width": 2,
                    "shape": "hv" if line.step else "linear",
                },
                "marker": {"size": 4},
                "hovertemplate": hover,
            }
            for line in self.lines
        ]
        shapes: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        if self.cap is not None:
            shapes.append(_hline(self.cap))
            annotations.append(_label(self.x_end, self.cap, self.cap_label))
        if self.load_window is not None:
            begin, end = self.load_window
            shapes.append(
                {
                    "type": "rect", "xref": "x", "yref": "paper", "x0": begin, "x1": end,
                    "y0": 0, "y1": 1, "fillcolor": LOAD_FILL, "line": {"width": 0},
                    "layer": "below",
                }
            )  # fmt: skip
            annotations.append(
                {
                    "x": begin, "y": 1, "xref": "x", "yref": "paper", "text": "load",
                    "showarrow": False, "xanchor": "left", "yanchor": "top",
                    "font": {"size": 10, "color": MARK},
                }
            )  # fmt: skip
        return {
            "data": data,
            "layout": {
                "title": {"text": self.title, "font": {"size": 13}, "x": 0, "xanchor": "left",
                          "y": 0.98, "yanchor": "top"},
                "xaxis": {"title": {"text": "s since the session started", "standoff": 2},
                          "range": [0, max(self.x_end, 1.0)], "zeroline": False},
                "yaxis": {"title": {"text": self.unit}, "rangemode": "tozero"},
                "shapes": shapes,
                "annotations": annotations,
                "hovermode": "closest",
                "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02,
                           "yanchor": "bottom", "font": {"size": 10}},
                "margin": {"l": 45, "r": 10, "t": 45, "b": 35},
                "height": 230,
            },
        }  # fmt: skip


def write(timeline: Timeline, directory: Path) -> str:
    """The figure file, ``<name>.json`` in ``directory``; its name."""
    path = directory / f"{timeline.name}.json"
    text = json.dumps(timeline.figure(), sort_keys=True, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    return path.name


def session_timelines(summary: Summary, x_end: float | None = None) -> list[Timeline]:
    """The Diagnosis's two timelines: connections held per worker, idle-in-transaction age."""
    session = summary.session
    end = x_end if x_end is not None else max(session.end - session.start, 1.0)
    window = load_window(summary)
    held_lines = [
        Line(f"worker {pid}" if pid else "owner unknown", x, y, COLOURS[i % len(COLOURS)], True)
        for i, (pid, x, y) in enumerate(held_per_worker(summary))
    ]
    caps = {pool.capacity for pool in summary.pools}
    cap = next(iter(caps)) if len(caps) == 1 else None  # one cap per worker, when they agree
    x, oldest, p95 = idle_ages(summary)
    threshold = summary.thresholds.idle_in_transaction_seconds
    return [
        Timeline(
            "connections-held",
            "Connections held, per worker",
            "transactions",
            held_lines,
            end,
            float(cap) if cap is not None else None,
            f"pool cap per worker ({cap})",
            window,
        ),
        Timeline(
            "idle-in-transaction-age",
            "Idle-in-transaction age",
            "seconds",
            [Line("p95", x, p95, COLOURS[0]), Line("max", x, oldest, COLOURS[1])],
            end,
            threshold,
            f"threshold ({threshold:g} s)",
            window,
        ),
    ]


def load_window(summary: Summary) -> tuple[float, float] | None:
    load = summary.session.load
    if load is None:
        return None
    start = summary.session.start
    return (round(load.started_at - start, 3), round(load.ended_at - start, 3))


def held_per_worker(summary: Summary) -> list[tuple[int, list[float], list[float]]]:
    held = summary.held
    if held.empty:
        return []
    found = []
    owners = held["owner_pid"]
    for pid in sorted(int(p) for p in owners.dropna().unique()):
        mine = held[(owners == pid).fillna(False).to_numpy(dtype=bool)]
        x = mine["taken_at"].astype(float).to_numpy() - summary.session.start
        found.append((pid, _round(x), _round(mine["held"].to_numpy(dtype=np.float64))))
    return found


def held_total(summary: Summary) -> tuple[list[float], list[float]]:
    held = summary.held
    if held.empty:
        return [], []
    total = held.groupby("taken_at")["held"].sum().sort_index()
    x = total.index.to_numpy(dtype=np.float64) - summary.session.start
    return _round(x), _round(total.to_numpy(dtype=np.float64))


def idle_ages(summary: Summary) -> tuple[list[float], list[float], list[float]]:
    """Per snapshot: seconds since session start, the oldest idle-in-transaction age, p95."""
    from profiler.analysis.stats import percentile

    session = summary.session
    activity = session.activity
    times = plots._snapshot_times(activity, session.snapshots)
    if times.size == 0:
        return [], [], []
    clients = plots._client_rows(activity)
    idle = clients[clients["state"].isin(IDLE_IN_TRANSACTION).to_numpy(dtype=bool)]
    ages = (idle["sampled_at"].astype(float) - idle["state_change"].astype(float)).clip(lower=0)
    grouped = idle.assign(age=ages).groupby("taken_at")["age"]
    oldest = grouped.max().reindex(times, fill_value=0.0).to_numpy(dtype=np.float64)
    p95 = (
        grouped.agg(lambda a: percentile(sorted(a.tolist()), 95) or 0.0)
        .reindex(times, fill_value=0.0)
        .to_numpy(dtype=np.float64)
    )
    return _round(times - session.start), _round(oldest), _round(p95)


def _round(values: npt.NDArray[Any]) -> list[float]:
    return [round(float(v), 3) for v in values]


def _hline(y: float) -> dict[str, Any]:
    return {
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
        "line": {"color": MARK, "width": 1, "dash": "dash"},
    }  # fmt: skip


def _label(x: float, y: float, text: str) -> dict[str, Any]:
    return {
        "x": 1, "y": y, "xref": "paper", "yref": "y", "text": text, "showarrow": False,
        "xanchor": "right", "yanchor": "bottom", "font": {"size": 10, "color": MARK},
    }  # fmt: skip
