"""The files a findings page links: plots and flamegraphs, each capped, and the manifest of
what was written, folded, thinned or left out (the page says so: a picture is not the data)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler import units
from profiler.errors import ProfilerError
from profiler.report.fold import CappedFlamegraph, capped_flamegraph
from profiler.report.page_text import session_path
from profiler.report.scrub import Scrub, mask_passwords

if TYPE_CHECKING:
    from profiler.memory.rss import HeapPoint
    from profiler.report.memory_flamegraph import MemoryProfile
    from profiler.report.plots import Plot
    from profiler.session.reader import Session
    from profiler.session.summary import Summary

ASSETS = "assets"
MEMORY_FOLD_SHARE = 0.001
"""Memory flamegraphs always fold frames under 0.1% of the peak: noise, and the bulk of a
big capture's stacks."""
HOLD_FLAMEGRAPH = "hold-flamegraph.svg"
CPU_WORK_FLAMEGRAPH = "work-only.svg"
MERGED = "merged"  # py-spy's files of all workers: collapsed-merged-<stamp>.txt
PLOT_MIN_POINTS = 50  # a plot over the cap is redrawn with fewer points, down to this


@dataclass(frozen=True, slots=True)
class Asset:
    """A file the page links to: ``path`` relative to the report folder (POSIX)."""

    path: str
    bytes: int
    kind: str  # plot, timeline, or a flamegraph: hold-, cpu-work-, cpu-, memory-flamegraph

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class Folded:
    """A flamegraph whose frames under ``min_share`` of the total went into their parents."""

    path: str
    min_share: float
    stacks: int  # distinct stacks before folding
    folded_stacks: int  # stacks cut short at a folded frame
    reason: str  # "default" (memory flamegraphs always fold) or "cap"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "min_share": self.min_share,
            "stacks": self.stacks,
            "folded_stacks": self.folded_stacks,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ThinnedSeries:
    """A plotted series drawn with ``kept`` of its ``points`` (bucket ``how``)."""

    path: str
    series: str
    points: int
    kept: int
    how: str

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "series": self.series,
            "points": self.points,
            "kept": self.kept,
            "how": self.how,
        }


@dataclass(frozen=True, slots=True)
class ReportManifest:
    """What :func:`write_report` wrote: the page, every asset, what was folded or thinned,
    and notes on what was left out (a plot with no data, an unreadable capture, ...)."""

    page: Path
    assets: list[Asset]
    folded: list[Folded] = field(default_factory=list)
    thinned: list[ThinnedSeries] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``report --json`` shape: ``{page, assets: [{path, bytes, kind}], folded,
        thinned, notes}``; asset paths are relative to the page's folder."""
        return {
            "page": str(self.page),
            "assets": [asset.to_json() for asset in self.assets],
            "folded": [item.to_json() for item in self.folded],
            "thinned": [item.to_json() for item in self.thinned],
            "notes": list(self.notes),
        }


@dataclass
class State:
    """What has been written so far, and what the page must say about it."""

    out: Path
    cap: int
    assets: list[Asset] = field(default_factory=list)
    folded: list[Folded] = field(default_factory=list)
    thinned: list[ThinnedSeries] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, path: Path, kind: str) -> Asset:
        asset = Asset(self.relative(path), path.stat().st_size, kind)
        self.assets.append(asset)
        return asset

    def relative(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    asset: Asset
    detail: str = ""


def plot_assets(
    summary: Summary,
    memory: list[MemoryProfile],
    directory: Path,
    state: State,
    max_points: int,
) -> list[Plot]:
    """Every plot, redrawn with fewer points while one is over the cap."""
    from profiler.report import plots

    session = summary.session
    heap: dict[int, Sequence[HeapPoint]] = {profile.pid: profile.heap for profile in memory}
    points = max_points
    while True:
        drawn = plots.write_plots(
            activity=session.activity,
            snapshots=session.snapshots,
            held=summary.held,
            rss=session.rss,
            heap=heap,
            start=session.start,
            idle_threshold=summary.thresholds.idle_in_transaction_seconds,
            directory=directory,
            max_points=points,
        )
        heavy = [p for p in drawn if p.path is not None and p.path.stat().st_size > state.cap]
        if not heavy or points <= PLOT_MIN_POINTS:
            break
        points = max(PLOT_MIN_POINTS, points // 4)
    kept: list[Plot] = []
    for plot in drawn:
        if plot.path is None:
            state.notes.append(f"Plot “{plot.title}” left out: {plot.skipped}.")
            kept.append(plot)
            continue
        if plot.path.stat().st_size > state.cap:
            plot.path.unlink()
            state.notes.append(
                f"Plot “{plot.title}” left out: over {units.size(state.cap)} even with "
                f"{PLOT_MIN_POINTS} points per line."
            )
            kept.append(plots.Plot(plot.name, plot.title, None, "over the size cap"))
            continue
        asset = state.add(plot.path, "plot")
        state.thinned.extend(
            ThinnedSeries(asset.path, t.series, t.points, t.kept, t.how) for t in plot.thinned
        )
        kept.append(plot)
    return kept


def hold_flamegraph(summary: Summary, directory: Path, scrub: Scrub, state: State) -> Link | None:
    """The connection-hold profile as an interactive flamegraph (ms held per stack)."""
    profile = summary.hold_profile
    if not profile:
        state.notes.append(
            "No connection-hold flamegraph: no stack sample fell inside a held transaction."
        )
        return None
    total = sum(profile.values())
    capped = capped_flamegraph(
        profile,
        title=scrub.text(f"Where connections were held: {summary.session.name}"),
        subtitle=(
            f"{total / 1000:.1f} connection-seconds attributed; stacks from "
            f"{summary.attribution}; the worker fallback's under its own root"
        ),
        unit="ms held",
        cap=state.cap,
    )
    return write_flamegraph(
        capped, directory / HOLD_FLAMEGRAPH, "hold-flamegraph", "connection-hold", state
    )


def write_flamegraph(
    capped: CappedFlamegraph,
    path: Path,
    kind: str,
    label: str,
    state: State,
    *,
    reason: str = "cap",
) -> Link | None:
    relative = state.relative(path)
    if capped.svg is None:
        state.notes.append(
            f"The {label} flamegraph ({relative}) was left out: over {units.size(state.cap)} "
            f"even with frames under {units.percent(capped.min_share)} folded."
        )
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(capped.svg, encoding="utf-8")
    if capped.folded_stacks:
        state.folded.append(
            Folded(relative, capped.min_share, capped.stacks, capped.folded_stacks, reason)
        )
    return Link(label, state.add(path, kind))


_CPU_NAME = re.compile(r"^flamegraph-(?P<key>[^-]+)-.*\.svg$")
_SVG_TEXT = re.compile(r'(<text class="(?:title|subtitle)"[^>]*>)(.*?)(</text>)', re.DOTALL)


def cpu_flamegraphs(session: Session, directory: Path, scrub: Scrub, state: State) -> list[Link]:
    """The py-spy flamegraphs of ``cpu/``, scrubbed (their subtitle carries the worker's
    command line) and re-rendered folded from their collapsed stacks when over the cap."""
    from profiler.analysis import collapsed

    links: list[Link] = []
    for source in cpu_files(session):
        target = directory / "cpu" / source.name
        named = _CPU_NAME.match(source.name)
        key = named["key"] if named else source.stem
        label = "all workers (merged)" if key == "merged" else f"worker {key}"
        try:
            text = source.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            state.notes.append(f"CPU flamegraph {session_path(session, source)} unreadable: {exc}")
            continue
        text = scrub_svg(text, scrub)
        if len(text.encode("utf-8")) <= state.cap:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            links.append(Link(label, state.add(target, "cpu-flamegraph")))
            continue
        stacks_file = source.with_name(source.name.replace("flamegraph-", "collapsed-", 1))
        stacks_file = stacks_file.with_suffix(".txt")
        if not stacks_file.is_file():
            state.notes.append(
                f"CPU flamegraph {session_path(session, source)} left out: over "
                f"{units.size(state.cap)} and no collapsed stacks beside it to fold."
            )
            continue
        profile, _ = collapsed.read_lenient(stacks_file)
        title, subtitle = svg_titles(text)
        capped = capped_flamegraph(
            profile,
            title=title or f"CPU: {label}",
            subtitle=subtitle,
            unit="samples",
            cap=state.cap,
        )
        link = write_flamegraph(capped, target, "cpu-flamegraph", label, state)
        if link is not None:
            links.append(link)
    return links


def cpu_work_flamegraph(session: Session, directory: Path, state: State) -> Link | None:
    """All workers' CPU samples merged, with the threads only waiting left out
    (:func:`~profiler.analysis.stack_kinds.work_only`): with ``--idle`` they are most of
    py-spy's width and the work hides in thin towers. Waits for a pool connection stay."""
    from profiler.analysis import collapsed
    from profiler.analysis.stack_kinds import work_only

    sources = cpu_collapsed_files(session)
    if not sources:
        if cpu_files(session):
            state.notes.append(
                "No work-only CPU flamegraph: no collapsed stacks in cpu/ to build it from."
            )
        return None
    stacks = collapsed.merge(collapsed.read_lenient(path)[0] for path in sources)
    work, waiting = work_only(stacks)
    total = collapsed.total(stacks)
    if not work:
        state.notes.append(
            f"No work-only CPU flamegraph: all {total:,} CPU samples were threads only waiting."
        )
        return None
    share = units.percent(waiting / total)
    capped = capped_flamegraph(
        work,
        title="CPU, work only: all workers merged",
        subtitle=(
            f"waiting threads left out: {share} of {total:,} samples; "
            "waits for a pool connection and database calls kept"
        ),
        unit="samples",
        cap=state.cap,
    )
    link = write_flamegraph(
        capped,
        directory / "cpu" / CPU_WORK_FLAMEGRAPH,
        "cpu-work-flamegraph",
        "work-only CPU",
        state,
    )
    if link is None:
        return None
    return Link("CPU, work only", link.asset, f"{share} of {total:,} samples")


def cpu_collapsed_files(session: Session) -> list[Path]:
    """The collapsed stacks the cpu probe wrote: its merged file(s), else every worker's."""
    probe = session.manifest.get("probes", {}).get("cpu") or {}
    listed = [
        session.path / name
        for name in probe.get("files", []) or []
        if isinstance(name, str) and Path(name).name.startswith("collapsed-")
    ]
    found = [
        path
        for path in listed or sorted((session.path / "cpu").glob("collapsed-*.txt"))
        if path.is_file() and path.suffix == ".txt"
    ]
    merged = [path for path in found if path.name.startswith(f"collapsed-{MERGED}-")]
    return sorted(merged or found, key=lambda path: path.name)


def cpu_files(session: Session) -> list[Path]:
    """The SVGs the cpu probe recorded (its manifest entry), else any in ``cpu/``."""
    probe = session.manifest.get("probes", {}).get("cpu") or {}
    listed = [
        session.path / name
        for name in probe.get("files", []) or []
        if isinstance(name, str) and name.endswith(".svg")
    ]
    found = listed or sorted((session.path / "cpu").glob("flamegraph-*.svg"))
    return sorted((path for path in found if path.is_file()), key=lambda path: path.name)


def scrub_svg(text: str, scrub: Scrub) -> str:
    """Passwords masked everywhere; the title and subtitle (where command lines go) redacted."""

    def redact(match: re.Match[str]) -> str:
        inner = html.escape(scrub.text(html.unescape(match[2])), quote=True)
        return match[1] + inner.encode("ascii", "xmlcharrefreplace").decode("ascii") + match[3]

    return _SVG_TEXT.sub(redact, mask_passwords(text))


def svg_titles(text: str) -> tuple[str | None, str | None]:
    found: dict[str, str | None] = {"title": None, "subtitle": None}
    for match in _SVG_TEXT.finditer(text):
        kind = "subtitle" if "subtitle" in match[1] else "title"
        found[kind] = found[kind] or html.unescape(match[2])
    return found["title"], found["subtitle"]


def memory_profiles(session: Session, state: State) -> list[MemoryProfile]:
    """Every readable ``mem/memray-*.bin``; an unreadable one is a note, not a failure."""
    from profiler.report.memory_flamegraph import read_memory_profile

    profiles: list[MemoryProfile] = []
    for capture in sorted((session.path / "mem").glob("memray-*.bin")):
        try:
            profiles.append(read_memory_profile(capture))
        except ProfilerError as exc:
            state.notes.append(
                f"memray capture {session_path(session, capture)} left out: {exc.message}"
            )
    return profiles


def memory_flamegraphs(memory: list[MemoryProfile], directory: Path, state: State) -> list[Link]:
    """Our own flamegraph of each capture's memory at its peak, small frames folded."""
    links = []
    for profile in memory:
        if not profile.profile:
            state.notes.append(
                f"memray capture of worker {profile.pid} has no allocation at its peak."
            )
            continue
        capped = capped_flamegraph(
            profile.profile,
            title=f"Memory live at the peak: worker {profile.pid}",
            subtitle=f"{units.size(profile.peak_bytes)} at the peak (memray high-water mark)",
            unit="bytes",
            cap=state.cap,
            min_share=MEMORY_FOLD_SHARE,
        )
        reason = "default" if capped.min_share <= MEMORY_FOLD_SHARE else "cap"
        link = write_flamegraph(
            capped,
            directory / f"memray-{profile.pid}-peak.svg",
            "memory-flamegraph",
            f"worker {profile.pid}",
            state,
            reason=reason,
        )
        if link is not None:
            links.append(
                Link(link.label, link.asset, f"{units.size(profile.peak_bytes)} at the peak")
            )
    return links


def write_timelines(summary: Summary, directory: Path, state: State) -> set[str]:
    """The Diagnosis's interactive timelines (Plotly figure files); the stems written."""
    from profiler.report import timelines

    written = set()
    for timeline in timelines.session_timelines(summary):
        if not any(line.x for line in timeline.lines):
            continue  # no data: the page says so where the SVG would be
        name = timelines.write(timeline, directory)
        state.add(directory / name, "timeline")
        written.add(timeline.name)
    return written
