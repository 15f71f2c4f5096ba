"""One session's findings page: Markdown for MkDocs (material) and GitHub, with its assets.

:func:`write_report` reads a session folder, analyses it with
:func:`profiler.session.summary.summarize` (the same numbers ``session show``
prints) and writes ``OUT/index.md`` plus ``OUT/assets/``: plots
(:mod:`profiler.report.plots`), the connection-hold flamegraph, the py-spy
flamegraphs of ``cpu/`` and a memory flamegraph per memray capture of
``mem/``. The page links its assets relatively, so the folder can be moved,
published into a site, or read on GitHub as it is.

Why things are the way they are:

* Deterministic: the same session gives the same bytes (no clock, no absolute
  path, sorted everything), so pages diff and golden-file tests compare bytes.
* Published files are capped (:data:`SIZE_CAP`, 50 MiB): memray's own HTML
  reaches gigabytes on big captures (memray issues #987, #484), so memory
  flamegraphs are rendered here from collapsed stacks, and any flamegraph
  over the cap has its small frames folded into their parents
  (:func:`capped_flamegraph`) until it fits; plots thin their series. The
  page says what was folded, thinned or left out: a reader must know a
  picture is not the whole data.
* Nothing secret is written: every query text goes through
  ``redaction.query`` and every other free text that may name a host or carry
  a DSN (command lines, titles, evidence strings, application names) through
  ``redaction.text``. Without a redaction object, passwords are still masked
  (:func:`mask_passwords`): command lines carry DSNs.
"""

from __future__ import annotations

import html
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.analysis.text import offset
from profiler.errors import ProfilerError, UsageError
from profiler.report import markdown as md

if TYPE_CHECKING:
    import pandas as pd

    from profiler.analysis.findings import Finding, Thresholds
    from profiler.lint import LintResult
    from profiler.memory.rss import HeapPoint
    from profiler.report.memory_flamegraph import MemoryProfile
    from profiler.report.plots import Plot
    from profiler.report.redact import Redaction
    from profiler.session.reader import Session
    from profiler.session.summary import HoldAttribution, Summary

PAGE = "index.md"
ASSETS = "assets"
SIZE_CAP = 50 * 2**20
"""Bytes any one published file may weigh."""
EPISODES_SHOWN = 20
STACKS_PER_EPISODE = 3
PATHS_SHOWN = 20
MEMORY_FOLD_SHARE = 0.001
"""Memory flamegraphs always fold frames under 0.1% of the peak: noise, and the bulk of a
big capture's stacks."""
FOLD_STEPS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
"""The shares tried in turn when a flamegraph is over the cap."""
FOLDED_LABEL = "[smaller frames folded]"
HOLD_FLAMEGRAPH = "hold-flamegraph.svg"
QUERY_CHARS = 2000  # a last query longer than this is cut on the page
CMDLINE_CHARS = 160
PLOT_MIN_POINTS = 50  # a plot over the cap is redrawn with fewer points, down to this

ATTRIBUTION = {
    "tasks": "the asyncio task sampler's samples (`tasks`)",
    "threads": "py-spy thread dumps (`threads`)",
    "tasks+threads": "asyncio task samples, and py-spy thread dumps for workers without "
    "the task sampler (`tasks+threads`)",
    "none": "nothing: no stack sample fell inside a held transaction (`none`)",
}
ATTRIBUTION_KINDS = {
    "task": "to the task that held the connection (the task ↔ backend join)",
    "worker-fallback": "by the worker fallback: no task was seen holding the connection, so "
    "its time is shared among the worker's requests meanwhile; those paths are marked "
    "*(worker fallback)* and name what ran, not the holder",
    "threads": "from the worker's py-spy thread dumps (no task sampler in that worker)",
}
SEVERITY_ORDER = ("critical", "warning", "info")
RULE_HEADINGS = {
    "held-code-path": "Code that held connections",
    "idle-in-transaction": "Idle in transaction",
    "pool-saturation": "Pool saturated",
    "blocked-event-loop": "Event loop blocked on the pool",
    "stuck-query": "Query stuck in a transaction",
    "rss-growth": "Memory growing",
    "memory-limit": "Near the memory limit",
    "worker-vanished": "Worker vanished",
}  # short headings: the page's table of contents stays readable
SKIPPED_EVIDENCE = frozenset({"frames", "time", "peak_at"})
"""Evidence keys the page leaves to the JSON: repeated by another column, or raw epochs."""


# -- the manifest of what was written ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asset:
    """A file the page links to: ``path`` relative to the report folder (POSIX)."""

    path: str
    bytes: int
    kind: str  # plot, hold-flamegraph, cpu-flamegraph, memory-flamegraph

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


# -- passwords and redaction ---------------------------------------------------------------

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
_KEY_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z_]*pass(?:word|wd)?\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)",
    re.IGNORECASE,
)
_FLAG_PASSWORD = re.compile(r"(?P<head>--password\s+)\S+", re.IGNORECASE)
_SQL_PASSWORD = re.compile(r"(?P<head>\bpassword\s+)'(?:[^']|'')*'", re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """``text`` with every password we can recognise replaced by ``***``: in URLs
    (``scheme://user:secret@``), ``key=value`` pairs (``password=``, ``PGPASSWORD=``),
    ``--password X`` and SQL's ``PASSWORD '...'``.

    >>> mask_passwords("gunicorn app --db postgresql+asyncpg://app:s3cret@db:5432/app")
    'gunicorn app --db postgresql+asyncpg://app:***@db:5432/app'
    >>> mask_passwords("PGPASSWORD=s3cret host=db password='a b' user=app")
    'PGPASSWORD=*** host=db password=*** user=app'
    >>> mask_passwords("ALTER ROLE app PASSWORD 'x''y'")
    "ALTER ROLE app PASSWORD '***'"
    """
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    text = _KEY_PASSWORD.sub(r"\g<head>***", text)
    text = _FLAG_PASSWORD.sub(r"\g<head>***", text)
    return _SQL_PASSWORD.sub(r"\g<head>'***'", text)


class _Scrub:
    """The one place page text passes through: the caller's redaction, then our password mask
    (so a redaction that forgot a pattern still cannot leak a password)."""

    def __init__(self, redaction: Redaction | None) -> None:
        self.redaction = redaction

    def query(self, text: str) -> str:
        redacted = self.redaction.query(text) if self.redaction is not None else text
        return mask_passwords(redacted)

    def text(self, text: str) -> str:
        redacted = self.redaction.text(text) if self.redaction is not None else text
        return mask_passwords(redacted)

    def title(self, text: str) -> str:
        """A finding's title: its backticked spans are queries (``stuck-query``), the rest text."""
        parts = text.split("`")
        return "`".join(
            self.query(part) if index % 2 else self.text(part) for index, part in enumerate(parts)
        )


# -- folding flamegraphs -------------------------------------------------------------------


def fold_small_frames(profile: Mapping[str, int], min_share: float) -> tuple[Counter[str], int]:
    """The profile with every frame under ``min_share`` of the total folded into its parent.

    A stack is cut at its first frame whose inclusive weight is under the
    limit and ends in :data:`FOLDED_LABEL` instead, so the parent keeps its
    width and the picture says something was there. Returns the folded
    profile and how many stacks were cut. Non-positive counts are dropped.

    >>> folded, cut = fold_small_frames({"a;b": 98, "a;c": 1, "a;d": 1}, 0.05)
    >>> sorted(folded.items()), cut
    ([('a;[smaller frames folded]', 2), ('a;b', 98)], 2)
    """
    counts = {stack: count for stack, count in profile.items() if count > 0}
    total = sum(counts.values())
    if min_share <= 0 or total == 0:
        return Counter(counts), 0
    limit = min_share * total
    nodes: dict[tuple[int, str], int] = {}  # (parent node, label) -> node; 0 is the root
    weight = [total]
    paths: list[list[int]] = []
    for stack, count in counts.items():
        node, path = 0, []
        for label in stack.split(";"):
            key = (node, label)
            child = nodes.get(key)
            if child is None:
                child = nodes[key] = len(weight)
                weight.append(0)
            weight[child] += count
            path.append(child)
            node = child
        paths.append(path)
    folded: Counter[str] = Counter()
    cut = 0
    for (stack, count), path in zip(counts.items(), paths, strict=True):
        keep = next((i for i, node in enumerate(path) if weight[node] < limit), None)
        if keep is None:
            folded[stack] += count
            continue
        cut += 1
        folded[";".join([*stack.split(";")[:keep], FOLDED_LABEL])] += count
    return folded, cut


@dataclass(frozen=True, slots=True)
class CappedFlamegraph:
    """A flamegraph that fits the cap, and how much was folded to make it fit."""

    svg: str | None  # None: over the cap even at the coarsest fold
    min_share: float  # 0: nothing folded
    stacks: int
    folded_stacks: int


def capped_flamegraph(
    profile: Mapping[str, int],
    *,
    title: str,
    subtitle: str | None,
    unit: str,
    cap: int = SIZE_CAP,
    min_share: float = 0.0,
) -> CappedFlamegraph:
    """:func:`~profiler.render.flamegraph.render_svg` of ``profile``, folded
    (:func:`fold_small_frames`) at ``min_share``, then at each coarser
    :data:`FOLD_STEPS` share, until the SVG is at most ``cap`` bytes. The
    subtitle says what was folded, so the file explains itself."""
    from profiler.render.flamegraph import render_svg

    stacks = sum(1 for count in profile.values() if count > 0)
    shares = [min_share, *(share for share in FOLD_STEPS if share > min_share)]
    for share in shares:
        folded, cut = fold_small_frames(profile, share)
        note = f"frames under {_percent_text(share)} folded into their parents" if cut else None
        text = render_svg(
            folded,
            title=title,
            subtitle="; ".join(part for part in (subtitle, note) if part) or None,
            unit=unit,
        )
        if len(text.encode("utf-8")) <= cap:
            return CappedFlamegraph(text, share if cut else 0.0, stacks, cut)
    return CappedFlamegraph(None, shares[-1], stacks, stacks)


# -- the report ----------------------------------------------------------------------------


def write_report(
    session_dir: Path,
    out: Path,
    *,
    thresholds: Thresholds | None = None,
    redaction: Redaction | None = None,
    force: bool = False,
    size_cap: int = SIZE_CAP,
    max_points: int | None = None,
    source: Path | None = None,
) -> ReportManifest:
    """Write ``out/index.md`` and ``out/assets/`` for the session in ``session_dir``.

    The session is read first: an unreadable one is an
    :class:`~profiler.errors.InputError` (exit 7) before anything is written.
    A non-empty ``out`` is refused (:class:`~profiler.errors.UsageError`, exit
    2) unless ``force``, which replaces ``out/index.md`` and ``out/assets/``
    only. ``size_cap`` bounds every file written (tests make it tiny);
    ``max_points`` the points per plotted line (default
    :data:`profiler.report.plots.MAX_POINTS`).

    ``source`` (the gateway's source folder) adds a section "Handlers flagged
    by lint": ``profiler lint`` finds every handler that *could* hold a
    session across slow work, the session shows which ones *did*; the join
    tells a reader which flagged handlers matter now and which only wait for
    traffic. Linted before anything is written, so a bad ``source`` (exit 7)
    leaves ``out`` untouched.
    """
    from profiler.report import plots
    from profiler.session import open as open_session
    from profiler.session.summary import summarize

    session = open_session(session_dir)
    summary = summarize(session, thresholds)
    linted = None
    if source is not None:
        from profiler.lint import lint_path
        from profiler.report.diagnosis_source import join_lint

        linted = lint_path(source)
        summary.diagnosis = join_lint(summary.diagnosis, linted)
    _prepare(out, force=force)
    assets_dir = out / ASSETS
    assets_dir.mkdir(parents=True, exist_ok=True)
    scrub = _Scrub(redaction)
    state = _State(out, size_cap)

    memory = _memory_profiles(session, state)
    plot_list = _plots(summary, memory, assets_dir, state, max_points or plots.MAX_POINTS)
    hold = _hold_flamegraph(summary, assets_dir, scrub, state)
    cpu = _cpu_flamegraphs(session, assets_dir, scrub, state)
    mem = _memory_flamegraphs(memory, assets_dir, state)

    page = _Page(summary, scrub, state, linted)
    text = page.render(plot_list, hold, cpu, mem)
    path = out / PAGE
    path.write_text(text, encoding="utf-8")
    return ReportManifest(
        path,
        sorted(state.assets, key=lambda asset: asset.path),
        state.folded,
        state.thinned,
        state.notes,
    )


@dataclass
class _State:
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


def _prepare(out: Path, *, force: bool) -> None:
    from profiler.outputs import prepare_directory

    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder", hint="pass another -o DIR")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(
                f"{out} is not empty",
                hint="pass --force to replace its report (index.md and assets/), or another -o DIR",
            )
        (out / PAGE).unlink(missing_ok=True)
        if (out / ASSETS).is_dir():
            shutil.rmtree(out / ASSETS)
    prepare_directory(out)


# -- assets --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Link:
    label: str
    asset: Asset
    detail: str = ""


def _plots(
    summary: Summary,
    memory: list[MemoryProfile],
    directory: Path,
    state: _State,
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
                f"Plot “{plot.title}” left out: over {_size(state.cap)} even with "
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


def _hold_flamegraph(
    summary: Summary, directory: Path, scrub: _Scrub, state: _State
) -> _Link | None:
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
    return _write_flamegraph(
        capped, directory / HOLD_FLAMEGRAPH, "hold-flamegraph", "connection-hold", state
    )


def _write_flamegraph(
    capped: CappedFlamegraph,
    path: Path,
    kind: str,
    label: str,
    state: _State,
    *,
    reason: str = "cap",
) -> _Link | None:
    relative = state.relative(path)
    if capped.svg is None:
        state.notes.append(
            f"The {label} flamegraph ({relative}) was left out: over {_size(state.cap)} "
            f"even with frames under {_percent_text(capped.min_share)} folded."
        )
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(capped.svg, encoding="utf-8")
    if capped.folded_stacks:
        state.folded.append(
            Folded(relative, capped.min_share, capped.stacks, capped.folded_stacks, reason)
        )
    return _Link(label, state.add(path, kind))


_CPU_NAME = re.compile(r"^flamegraph-(?P<key>[^-]+)-.*\.svg$")
_SVG_TEXT = re.compile(r'(<text class="(?:title|subtitle)"[^>]*>)(.*?)(</text>)', re.DOTALL)


def _cpu_flamegraphs(
    session: Session, directory: Path, scrub: _Scrub, state: _State
) -> list[_Link]:
    """The py-spy flamegraphs of ``cpu/``, scrubbed (their subtitle carries the worker's
    command line) and re-rendered folded from their collapsed stacks when over the cap."""
    from profiler.analysis import collapsed

    links: list[_Link] = []
    for source in _cpu_files(session):
        target = directory / "cpu" / source.name
        named = _CPU_NAME.match(source.name)
        key = named["key"] if named else source.stem
        label = "all workers (merged)" if key == "merged" else f"worker {key}"
        try:
            text = source.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            state.notes.append(f"CPU flamegraph {_session_path(session, source)} unreadable: {exc}")
            continue
        text = _scrub_svg(text, scrub)
        if len(text.encode("utf-8")) <= state.cap:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            links.append(_Link(label, state.add(target, "cpu-flamegraph")))
            continue
        stacks_file = source.with_name(source.name.replace("flamegraph-", "collapsed-", 1))
        stacks_file = stacks_file.with_suffix(".txt")
        if not stacks_file.is_file():
            state.notes.append(
                f"CPU flamegraph {_session_path(session, source)} left out: over "
                f"{_size(state.cap)} and no collapsed stacks beside it to fold."
            )
            continue
        profile, _ = collapsed.read_lenient(stacks_file)
        title, subtitle = _svg_titles(text)
        capped = capped_flamegraph(
            profile,
            title=title or f"CPU: {label}",
            subtitle=subtitle,
            unit="samples",
            cap=state.cap,
        )
        link = _write_flamegraph(capped, target, "cpu-flamegraph", label, state)
        if link is not None:
            links.append(link)
    return links


def _cpu_files(session: Session) -> list[Path]:
    """The SVGs the cpu probe recorded (its manifest entry), else any in ``cpu/``."""
    probe = session.manifest.get("probes", {}).get("cpu") or {}
    listed = [
        session.path / name
        for name in probe.get("files", []) or []
        if isinstance(name, str) and name.endswith(".svg")
    ]
    found = listed or sorted((session.path / "cpu").glob("flamegraph-*.svg"))
    return sorted((path for path in found if path.is_file()), key=lambda path: path.name)


def _scrub_svg(text: str, scrub: _Scrub) -> str:
    """Passwords masked everywhere; the title and subtitle (where command lines go) redacted."""

    def redact(match: re.Match[str]) -> str:
        inner = html.escape(scrub.text(html.unescape(match[2])), quote=True)
        return match[1] + inner.encode("ascii", "xmlcharrefreplace").decode("ascii") + match[3]

    return _SVG_TEXT.sub(redact, mask_passwords(text))


def _svg_titles(text: str) -> tuple[str | None, str | None]:
    found: dict[str, str | None] = {"title": None, "subtitle": None}
    for match in _SVG_TEXT.finditer(text):
        kind = "subtitle" if "subtitle" in match[1] else "title"
        found[kind] = found[kind] or html.unescape(match[2])
    return found["title"], found["subtitle"]


def _memory_profiles(session: Session, state: _State) -> list[MemoryProfile]:
    """Every readable ``mem/memray-*.bin``; an unreadable one is a note, not a failure."""
    from profiler.report.memory_flamegraph import read_memory_profile

    profiles: list[MemoryProfile] = []
    for capture in sorted((session.path / "mem").glob("memray-*.bin")):
        try:
            profiles.append(read_memory_profile(capture))
        except ProfilerError as exc:
            state.notes.append(
                f"memray capture {_session_path(session, capture)} left out: {exc.message}"
            )
    return profiles


def _memory_flamegraphs(memory: list[MemoryProfile], directory: Path, state: _State) -> list[_Link]:
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
            subtitle=f"{_size(profile.peak_bytes)} at the peak (memray high-water mark)",
            unit="bytes",
            cap=state.cap,
            min_share=MEMORY_FOLD_SHARE,
        )
        reason = "default" if capped.min_share <= MEMORY_FOLD_SHARE else "cap"
        link = _write_flamegraph(
            capped,
            directory / f"memray-{profile.pid}-peak.svg",
            "memory-flamegraph",
            f"worker {profile.pid}",
            state,
            reason=reason,
        )
        if link is not None:
            links.append(_Link(link.label, link.asset, f"{_size(profile.peak_bytes)} at the peak"))
    return links


# -- the page ------------------------------------------------------------------------------


class _Page:
    """The Markdown, section by section. Every text from the session goes through ``scrub``."""

    def __init__(
        self, summary: Summary, scrub: _Scrub, state: _State, linted: LintResult | None = None
    ) -> None:
        self.linted = linted
        self.summary = summary
        self.session = summary.session
        self.scrub = scrub
        self.state = state
        self.lines: list[str] = []

    def render(
        self,
        plot_list: list[Plot],
        hold: _Link | None,
        cpu: list[_Link],
        mem: list[_Link],
    ) -> str:
        self._title()
        self._findings()
        if self.linted is not None:
            self._lint(self.linted)
        self._measures()
        self._plots(plot_list)
        self._paths()
        self._flamegraphs(hold, cpu, mem)
        self._episodes()
        self._notes()
        self._files()
        text = "\n".join(self.lines).rstrip("\n") + "\n"
        return re.sub(r"\n{3,}", "\n\n", text)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    # -- sections --

    def _title(self) -> None:
        session, metrics = self.session, self.summary.metrics
        manifest = session.manifest
        name = self.scrub.text(session.name)
        self.add(f"# Session report: {md.escape(name.strip())}", "")
        targets = [t for t in manifest.get("targets", []) if isinstance(t, dict)]
        host = (manifest.get("host") or {}).get("hostname")
        dsn = manifest.get("dsn")
        where = f" on host {md.code(self.scrub.text(str(host)))}" if host else ""
        against = f" against {md.code(self.scrub.text(str(dsn)))}" if dsn else ""
        stopped = (
            " It was stopped early: the data ends where it stopped." if session.interrupted else ""
        )
        transactions = _plural(metrics.transactions, "transaction", "transactions")
        source = ATTRIBUTION.get(self.summary.attribution, self.summary.attribution)
        self.add(
            f"This session profiled {_plural(len(targets), 'worker', 'workers')}{where}{against}, "
            f"from {_utc(session.started_at)} for {_duration(metrics.duration_seconds)}.{stopped} "
            f"{transactions} were seen in `pg_stat_activity`; the code holding connections is "
            f"attributed from {source}.{self._attribution_split()} "
            f"A transaction counts as held too long when idle in transaction over "
            f"{_duration(self.summary.thresholds.idle_in_transaction_seconds)}.",
            "",
        )
        if targets:
            self.add("| worker | role | command line |", "|---:|---|---|")
            for target in targets:
                cmdline = self.scrub.text(str(target.get("cmdline") or ""))
                self.add(
                    f"| {target.get('pid', '?')} | {md.cell(str(target.get('role') or '-'))} "
                    f"| {md.code(_cut(cmdline, CMDLINE_CHARS)) if cmdline else '-'} |"
                )
            self.add("")
        troubles = [
            (name, probe)
            for name, probe in sorted((manifest.get("probes") or {}).items())
            if isinstance(probe, dict) and probe.get("status") in ("failed", "partial")
        ]
        for name, probe in troubles:
            error = self.scrub.text(str(probe.get("error") or "no detail"))
            self.add(f"- Probe `{name}` {probe['status']}: {md.escape(error.strip())}")
        if troubles:
            self.add("")

    def _attribution_split(self) -> str:
        """How much of the held time each way of attributing it gave: the task that held the
        connection, the worker fallback (labelled), or thread dumps."""
        attributed = self.summary.attributed
        millis = attributed.millis if attributed is not None else {}
        total = sum(millis.values())
        if not total:
            return ""
        parts = [
            f"{_percent_text(millis[kind] / total)} {text}"
            for kind, text in ATTRIBUTION_KINDS.items()
            if millis.get(kind)
        ]
        return " Of the held time, " + "; ".join(parts) + "."

    def _findings(self) -> None:
        findings = self.summary.findings
        self.add("## Findings", "")
        if not findings:
            self.add("No findings: nothing crossed a threshold.", "")
            return
        counts = Counter(finding.severity for finding in findings)
        parts = [f"{counts[s]} {s}" for s in SEVERITY_ORDER if counts[s]]
        self.add(
            f"{_plural(len(findings), 'finding', 'findings')}, most important first: "
            f"{', '.join(parts)}.",
            "",
        )
        for number, finding in enumerate(findings, 1):
            self._finding(number, finding)

    def _finding(self, number: int, finding: Finding) -> None:
        # A short heading (the table of contents stays readable), the full title under it.
        label = RULE_HEADINGS.get(finding.rule, finding.rule)
        title = md.with_code_spans(self.scrub.title(finding.title))
        self.add(f"### {number}. {label} ({finding.severity})", "")
        self.add(f"**{title}**", "")
        self.add(f"rule `{finding.rule}`", "")
        evidence = {k: v for k, v in finding.evidence.items() if k not in SKIPPED_EVIDENCE}
        flat = [(k, v) for k, v in evidence.items() if not _is_rows(v)]
        if flat:
            self.add("| evidence | value |", "|---|---|")
            for key, value in flat:
                self.add(f"| {_header(key)} | {self._value(key, value)} |")
            self.add("")
        for key, value in evidence.items():
            if _is_rows(value):
                self._rows(key, value)

    def _rows(self, key: str, rows: list[dict[str, Any]]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row if k not in SKIPPED_EVIDENCE))
        self.add(f"**{_header(key).capitalize()}** ({len(rows)} listed)", "")
        self.add(
            "| " + " | ".join(_header(c) for c in columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|",
        )
        for row in rows:
            cells = [self._value(c, row.get(c)) for c in columns]
            self.add("| " + " | ".join(cells) + " |")
        self.add("")

    def _value(self, key: str, value: Any) -> str:
        """One evidence value as table-cell Markdown, formatted by what its key says it is."""
        if value is None or (isinstance(value, list) and not value):
            text = "-"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, dict):
            text = " · ".join(
                f"{_header(k)} {self._value(k, v)}"
                for k, v in value.items()
                if k not in SKIPPED_EVIDENCE
            )
        elif isinstance(value, list):
            joiner, item_key = ("<br>", key) if _is_rows(value) else (", ", _singular(key))
            text = joiner.join(self._value(item_key, item) for item in value)
        elif isinstance(value, str):
            text = self._string(key, value)
        elif isinstance(value, (int, float)):
            text = _number_for(key, value)
        else:
            text = md.cell(self.scrub.text(str(value)))
        return text

    def _string(self, key: str, value: str) -> str:
        """Queries redacted as queries, code paths and command lines as code, the rest text."""
        if "query" in key:
            return md.code(_cut(" ".join(self.scrub.query(value).split()), 200))
        text = self.scrub.text(value)
        if key in ("path", "endpoint", "names", "downstream") or "cmdline" in key:
            return md.code(_cut(text, CMDLINE_CHARS))
        return md.cell(text)

    def _lint(self, linted: LintResult) -> None:
        """Lint's flagged handlers, each marked with the hold time this session saw for it."""
        seen = lint_seen_holding(linted, self.summary.hold_profile)
        counts = linted.counts()
        self.add("## Handlers flagged by lint", "")
        self.add(
            f"`profiler lint` read {_plural(counts['endpoints'], 'endpoint', 'endpoints')} in "
            f"{_plural(counts['files'], 'file', 'files')} of "
            f"`{md.escape(Path(linted.path).name)}`: "
            f"{counts['session_holding']} hold a DB session through a dependency, "
            f"{counts['flagged']} flagged. *Seen holding* is the time this session saw each "
            "one holding connections: by its endpoint in task samples, or by its function in "
            "a held code path. A flagged handler not seen here still holds its session across "
            "slow work when traffic reaches it.",
            "",
        )
        if not linted.findings:
            self.add("No handler flagged.", "")
            return
        self.add(
            "| handler | route | file | severity | while the session is open | seen holding |",
            "|---|---|---|---|---|---:|",
        )
        for finding, held_ms in zip(linted.findings, seen, strict=True):
            reasons = "<br>".join(f"{md.cell(r.kind)} (line {r.line})" for r in finding.reasons)
            self.add(
                f"| {md.code(finding.handler)} "
                f"| {md.code(finding.route) if finding.route else '-'} "
                f"| {md.code(f'{finding.file}:{finding.line}')} | {finding.severity} | {reasons} "
                f"| {_duration(held_ms / 1000) if held_ms else 'no'} |"
            )
        self.add("")

    def _measures(self) -> None:
        from profiler.session.compare import MEASURES

        self.add("## Measures", "", "| measure | value |", "|---|---:|")
        for measure in MEASURES:
            value = getattr(self.summary.metrics, measure.name)
            self.add(f"| {measure.label} | {_measure(value, measure.unit)} |")
        self.add("")
        if self.summary.pools:
            self.add(
                "What each worker's pool can serve: with a mean hold of H seconds per request "
                "and a pool of P, at most P / H requests per second (the pool read in the "
                "worker, told with `--pool-capacity`, or unknown).",
                "",
                "| worker | capacity |",
                "|---:|---|",
            )
            for pool in self.summary.pools:
                self.add(f"| {pool.worker_pid} | {md.cell(pool.capacity_text())} |")
            self.add("")

    def _plots(self, plot_list: list[Plot]) -> None:
        self.add("## Over time", "")
        self.add(
            "Seconds since the session started on every x axis. Plots with too many points "
            "are thinned (see [what was folded or thinned](#what-was-folded-thinned-or-left-out)).",
            "",
        )
        for plot in plot_list:
            if plot.path is None:
                skipped = md.escape(plot.skipped or "")
                self.add(f"*{md.escape(plot.title)}: not drawn, {skipped}.*", "")
            else:
                self.add(f"![{plot.title}]({ASSETS}/{plot.path.name})", "")

    def _paths(self) -> None:
        from profiler.analysis.code_paths import describe, group_by_path

        profile = self.summary.hold_profile
        self.add("## Code paths by connection-seconds held", "")
        if not profile:
            self.add("No stack sample fell inside a held transaction.", "")
            return
        owners: dict[str, set[int]] = {}
        for stack, pids in self.summary.hold_owners.items():
            owners.setdefault(describe(stack).display, set()).update(pids)
        grouped = group_by_path(profile)
        total = sum(profile.values())
        shown = grouped[:PATHS_SHOWN]
        self.add(
            f"Where each worker was while it held a connection, its time shared among what "
            f"it was doing: {_plural(len(grouped), 'code path', 'code paths')}"
            + (f", the {len(shown)} heaviest shown." if len(grouped) > len(shown) else "."),
            "",
            "| held | share | workers | code path |",
            "|---:|---:|---|---|",
        )
        for display, millis, _ in shown:
            workers = ", ".join(str(pid) for pid in sorted(owners.get(display, ()))) or "-"
            self.add(
                f"| {_held_seconds(millis / 1000)} | {_percent_text(millis / total)} | {workers} "
                f"| {md.code(self.scrub.text(display))} |"
            )
        self.add("")

    def _flamegraphs(self, hold: _Link | None, cpu: list[_Link], mem: list[_Link]) -> None:
        self.add("## Flamegraphs", "")
        self.add(
            "Interactive SVG files: open one on its own to zoom (click) and search; "
            "the x axis is not time, a code path is one tower.",
            "",
        )
        if hold is not None:
            self.add(
                f"- [Connection-hold flamegraph]({hold.asset.path}): the stacks of workers "
                f"while they held a connection, weighted by milliseconds held.",
                "",
                f"![Connection-hold flamegraph]({hold.asset.path})",
                "",
            )
        else:
            self.add("- No connection-hold flamegraph: nothing was attributed.", "")
        if cpu:
            self.add(
                "- CPU (py-spy, wall clock, idle included): "
                + ", ".join(f"[{link.label}]({link.asset.path})" for link in cpu)
            )
        else:
            self.add("- No CPU flamegraph: py-spy did not run in this session (`--cpu`).")
        if mem:
            self.add(
                "- Memory live at the peak (memray; frames under "
                f"{_percent_text(MEMORY_FOLD_SHARE)} of the peak folded into their parents): "
                + ", ".join(f"[{link.label}]({link.asset.path}) ({link.detail})" for link in mem)
            )
        else:
            self.add("- No memory flamegraph: memray did not capture this session (`--mem`).")
        self.add("")

    def _episodes(self) -> None:
        episodes = self.summary.episodes
        self.add("## Held connections", "")
        if episodes.empty:
            self.add("No transaction was seen in `pg_stat_activity`.", "")
            return
        longest = episodes.sort_values(
            ["duration", "episode_id"], ascending=[False, True], kind="stable"
        ).head(EPISODES_SHOWN)
        self.add(
            f"The {len(longest)} longest of {_plural(len(episodes), 'transaction', 'transactions')}"
            f" seen, each held as long as it was seen open (in a snapshot, or by the task "
            f"holding it), with where it was held: the task that held it where the task "
            f"sampler named its backend; else, marked as the worker fallback, the worker's "
            f"requests meanwhile; in a worker without the task sampler, its thread dumps "
            f"(from {ATTRIBUTION.get(self.summary.attribution, self.summary.attribution)}).",
            "",
        )
        stacks = _stacks_during(self.session, longest)
        attributed = self.summary.attributed
        from_tasks = _attributed_stacks(attributed, longest) if attributed is not None else {}
        start = self.session.start
        for number, row in enumerate(longest.to_dict("records"), 1):
            owner = None if _missing(row["owner_pid"]) else int(row["owner_pid"])
            held = f"{row['duration']:.1f} s"
            if row["open"]:
                held += " (still open)"
            elif round(row["duration_max"], 1) > round(row["duration"], 1):
                held += f" (at most {row['duration_max']:.1f} s)"  # gone by the next snapshot
            label = row.get("owner_label")
            via = row.get("owner_via")
            if owner is not None:
                who = f"worker {owner}" + ("" if _missing(via) or not via else f" via {via}")
            else:
                who = "owner unknown" if _missing(label) or not label else str(label)
            self.add(f"### {number}. Backend {int(row['pid'])} ({who}): held {held}", "")
            longest_idle = "-" if _missing(row["max_idle_age"]) else f"{row['max_idle_age']:.1f} s"
            application = row.get("application_name")
            app = (
                "-"
                if _missing(application) or not application
                else md.code(self.scrub.text(str(application)))
            )
            self.add(
                "| started | held | idle in transaction | longest idle | snapshots | application |",
                "|---:|---:|---:|---:|---:|---|",
                f"| {offset(row['start'] - start, unit=' s')} | {held} "
                f"| {row['idle_seconds']:.1f} s "
                f"| {longest_idle} | {int(row['samples'])} | {app} |",
                "",
            )
            cmdline = row.get("owner_cmdline")
            if owner is not None and not _missing(cmdline) and cmdline:
                text = _cut(self.scrub.text(str(cmdline)), CMDLINE_CHARS)
                self.add(f"Owner: worker {owner}, {md.code(text)}", "")
            query = row.get("last_query")
            if _missing(query) or not query:
                self.add("Last query: not seen.", "")
            else:
                self.add(
                    "Last query:",
                    "",
                    *_fenced(_cut(self.scrub.query(str(query)), QUERY_CHARS), "sql"),
                    "",
                )
            self._episode_stacks(int(row["episode_id"]), owner, stacks, from_tasks)

    def _episode_stacks(
        self,
        episode_id: int,
        owner: int | None,
        threads: dict[int, list[tuple[str, int, float]]],
        from_tasks: dict[int, list[tuple[str, float, float]]],
    ) -> None:
        """Where one transaction was held: its holder task's stacks, the worker fallback's
        (labelled), or, in a worker without the task sampler, its thread dumps."""
        attributed = self.summary.attributed
        kind = attributed.kinds.get(episode_id) if attributed is not None else None
        who = f"worker {owner}" if owner is not None else "owner unknown"
        if episode_id in from_tasks:
            heading = (
                "Stacks of the task that held it (the task ↔ backend join):"
                if kind == "task"
                else "No task was seen holding it; the worker's requests meanwhile "
                "(worker fallback, not the holder):"
            )
            self.add(heading, "", "| share | held | code path |", "|---:|---:|---|")
            for path, millis, share in from_tasks[episode_id]:
                self.add(
                    f"| {_percent_text(share)} | {_held_seconds(millis / 1000)} "
                    f"| {md.code(self.scrub.text(path))} |"
                )
            self.add("")
        elif threads.get(episode_id):
            self.add(
                f"Top stacks of {who} meanwhile:",
                "",
                "| share | samples | code path |",
                "|---:|---:|---|",
            )
            for stack, samples, share in threads[episode_id]:
                self.add(
                    f"| {_percent_text(share)} | {samples} | {md.code(self.scrub.text(stack))} |"
                )
            self.add("")
        elif owner is not None:
            self.add(f"No stack sample of {who} fell in what was seen of it.", "")

    def _notes(self) -> None:
        state = self.state
        self.add("## What was folded, thinned or left out", "")
        lines = []
        for folded in state.folded:
            why = (
                "as every memory flamegraph is"
                if folded.reason == "default"
                else f"to keep it under {_size(state.cap)}"
            )
            lines.append(
                f"- [{folded.path}]({folded.path}): frames under "
                f"{_percent_text(folded.min_share)} of the total folded into their parents, "
                f"{why}: {folded.folded_stacks} of {folded.stacks} stacks end in "
                f"`{FOLDED_LABEL}`."
            )
        for item in state.thinned:
            lines.append(
                f"- [{item.path}]({item.path}), {md.escape(item.series)}: "
                f"{item.points} points drawn "
                f"as {item.kept} (each the {item.how} of a bucket of consecutive points)."
            )
        lines += [f"- {md.escape(note.strip())}" for note in state.notes]
        self.add(*(lines or ["Nothing: every file shows all of its data."]), "")

    def _files(self) -> None:
        self.add("## Files", "")
        if not self.state.assets:
            self.add("No file besides this page.", "")
            return
        self.add("| file | size |", "|---|---:|")
        for asset in sorted(self.state.assets, key=lambda a: a.path):
            self.add(f"| [{asset.path}]({asset.path}) | {_size(asset.bytes)} |")
        self.add("")


_ENDPOINT = re.compile(r"^(?P<route>\S+ \S+)(?: \((?P<name>[^()]*)\))?$")


def lint_seen_holding(linted: LintResult, hold_profile: Mapping[str, int]) -> list[int]:
    """Milliseconds held per lint finding (same order), from the session's hold profile.

    A stack whose frames name a flagged handler (function name and file) goes
    to that handler; otherwise a stack whose root names its request's
    endpoint (``POST /tools/{tool_id}/invoke (invoke_tool)``) goes to the
    handlers serving that route, or of that name when the route differs (a
    prefix lint could not resolve).
    """
    from profiler.analysis.code_paths import ENDPOINT_PREFIX
    from profiler.analysis.collapsed import frames, split_label

    held = [0] * len(linted.findings)
    by_frame = {
        (finding.handler, Path(finding.file).name): index
        for index, finding in enumerate(linted.findings)
    }
    for stack, ms in hold_profile.items():
        if ms <= 0:
            continue
        labels = frames(stack)
        endpoint = None
        if labels and labels[0].startswith(ENDPOINT_PREFIX):
            endpoint, labels = labels[0][len(ENDPOINT_PREFIX) :], labels[1:]
        matched = {
            by_frame[key] for label in labels if (key := _frame_key(split_label(label))) in by_frame
        }
        if not matched and endpoint is not None:
            parsed = _ENDPOINT.match(endpoint)
            route = parsed["route"] if parsed else endpoint
            name = parsed["name"] if parsed else None
            matched = {i for i, f in enumerate(linted.findings) if route in f.routes}
            if not matched and name:
                matched = {i for i, f in enumerate(linted.findings) if f.handler == name}
        for index in matched:
            held[index] += ms
    return held


def _frame_key(label: Any) -> tuple[str, str]:
    return (str(label.name), Path(str(label.file)).name)


def _attributed_stacks(
    attributed: HoldAttribution, episodes: pd.DataFrame
) -> dict[int, list[tuple[str, float, float]]]:
    """Per episode attributed from task samples, its code paths: (path, ms, share)."""
    from profiler.analysis.code_paths import describe

    frame = attributed.per_episode
    if frame is None or frame.empty:
        return {}
    wanted = set(episodes["episode_id"].astype(int).tolist())
    chosen = frame[frame["episode_id"].isin(wanted).to_numpy(dtype=bool)]
    totals = chosen.groupby("episode_id")["millis"].sum().to_dict()
    summed: dict[int, dict[str, float]] = {}
    for episode, stack, millis in zip(
        chosen["episode_id"].tolist(),
        chosen["stack"].astype(str).tolist(),
        chosen["millis"].tolist(),
        strict=True,
    ):
        paths = summed.setdefault(int(episode), {})
        display = describe(stack).display
        paths[display] = paths.get(display, 0.0) + float(millis)
    found: dict[int, list[tuple[str, float, float]]] = {}
    for episode, paths in summed.items():
        total = float(totals[episode])
        ranked = sorted(paths.items(), key=lambda item: (-item[1], item[0]))
        found[episode] = [
            (path, millis, millis / total) for path, millis in ranked[:STACKS_PER_EPISODE]
        ]
    return found


def _stacks_during(
    session: Session, episodes: pd.DataFrame
) -> dict[int, list[tuple[str, int, float]]]:
    """Per episode of a worker without the task sampler, its thread dumps meanwhile, as code
    paths: (path, samples, share)."""
    from profiler.analysis.code_paths import describe
    from profiler.analysis.episodes import stacks_during
    from profiler.session.summary import attribution_samples

    found: dict[int, list[tuple[str, int, float]]] = {}
    _, threads = attribution_samples(session)  # task-sampled workers: _attributed_stacks
    for source in (threads,) if not threads.empty else ():
        during = stacks_during(episodes, source)
        columns = zip(
            during["episode_id"].tolist(),
            during["stack"].astype(str).tolist(),
            during["samples"].tolist(),
            during["share"].tolist(),
            strict=True,
        )
        for episode, stack, samples, share in columns:
            rows = found.setdefault(int(episode), [])
            if len(rows) < STACKS_PER_EPISODE:  # heaviest first within an episode
                rows.append((describe(stack).display, int(samples), float(share)))
    return found


# -- Markdown and number helpers -----------------------------------------------------------


def _fenced(text: str, language: str) -> list[str]:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", *text.rstrip("\n").splitlines(), fence]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header(key: str) -> str:
    return key.replace("_", " ")


def _singular(key: str) -> str:
    return key[:-1] if key.endswith("s") else key


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _number_for(key: str, value: float) -> str:
    """A number as its key says: bytes, shares, seconds, or plain."""
    if key.endswith("bytes") or key.endswith("bytes_per_minute"):
        text = _size(value)
        return f"{text}/min" if key.endswith("per_minute") else text
    if "share" in key:
        return _percent_text(value)
    if "seconds" in key or key.endswith("_age") or key.endswith("age"):
        return f"{_plain_number(value)} s"
    if "pid" in key:  # an identifier, not a quantity: no thousands separator
        return str(int(value))
    return _plain_number(value)


def _plain_number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def _held_seconds(seconds: float) -> str:
    """``12.3 s``, and two decimals under a tenth (a healthy session's holds are short)."""
    return f"{seconds:.2f} s" if seconds < 0.1 else f"{seconds:.1f} s"


def _percent_text(share: float) -> str:
    """``0.1234`` -> ``12%``; small shares keep their digits: ``0.001`` -> ``0.1%``."""
    percent = share * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f}%"
    if percent >= 1:
        return f"{percent:.1f}%".replace(".0%", "%")
    return f"{percent:.2g}%"


def _size(value: float) -> str:
    from profiler.memory.reports import format_bytes

    return format_bytes(value)


def _measure(value: Any, unit: str) -> str:
    if value is None or _missing(value):
        return "-"
    if unit == "bytes":
        return _size(float(value))
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s".replace(".0 s", " s")


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _missing(value: Any) -> bool:
    import pandas as pd

    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _session_path(session: Session, path: Path) -> str:
    try:
        return path.relative_to(session.path).as_posix()
    except ValueError:
        return path.name
