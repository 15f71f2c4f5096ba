"""One session's findings page: Markdown for MkDocs (material) and GitHub, with its assets.

:func:`write_report` reads a session folder, analyses it with
:func:`profiler.session.summary.summarize` (the same numbers ``session show``
prints) and writes ``OUT/index.md`` plus ``OUT/assets/``: plots
(:mod:`profiler.report.plots`), the connection-hold flamegraph, a work-only
CPU flamegraph (threads only waiting left out), the py-spy flamegraphs of
``cpu/`` and a memory flamegraph per memray capture of ``mem/``. The page
links its assets relatively, so the folder can be moved, published into a
site, or read on GitHub as it is.

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

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from profiler.errors import UsageError
from profiler.report.findings_page import Page
from profiler.report.fold import (
    FOLD_STEPS,
    FOLDED_LABEL,
    SIZE_CAP,
    CappedFlamegraph,
    capped_flamegraph,
    fold_small_frames,
)
from profiler.report.lint_join import lint_seen_holding
from profiler.report.report_assets import (
    ASSETS,
    Asset,
    Folded,
    ReportManifest,
    State,
    ThinnedSeries,
    cpu_flamegraphs,
    cpu_work_flamegraph,
    hold_flamegraph,
    memory_flamegraphs,
    memory_profiles,
    plot_assets,
    write_timelines,
)
from profiler.report.scrub import Scrub, mask_passwords

if TYPE_CHECKING:
    from profiler.analysis.findings import Thresholds
    from profiler.report.redact import Redaction

PAGE = "index.md"

__all__ = [
    "ASSETS",
    "FOLDED_LABEL",
    "FOLD_STEPS",
    "PAGE",
    "SIZE_CAP",
    "Asset",
    "CappedFlamegraph",
    "Folded",
    "ReportManifest",
    "ThinnedSeries",
    "capped_flamegraph",
    "fold_small_frames",
    "lint_seen_holding",
    "mask_passwords",
    "write_report",
]


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
    docs_prefix: str | None = None,
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

    ``docs_prefix`` (the way from the page up to the site's docs folder, ``../../`` for a
    published page) adds links to the fix how-to and the rule reference; a page read on
    its own has none, as they would lead nowhere.
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
    scrub = Scrub(redaction)
    state = State(out, size_cap)

    memory = memory_profiles(session, state)
    plot_list = plot_assets(summary, memory, assets_dir, state, max_points or plots.MAX_POINTS)
    timeline_files = write_timelines(summary, assets_dir, state)
    hold = hold_flamegraph(summary, assets_dir, scrub, state)
    cpu_work = cpu_work_flamegraph(session, assets_dir, state)
    cpu = cpu_flamegraphs(session, assets_dir, scrub, state)
    mem = memory_flamegraphs(memory, assets_dir, state)

    page = Page(summary, scrub, state, linted, docs_prefix)
    text = page.render(plot_list, hold, cpu, mem, timeline_files, cpu_work=cpu_work)
    path = out / PAGE
    path.write_text(text, encoding="utf-8")
    return ReportManifest(
        path,
        sorted(state.assets, key=lambda asset: asset.path),
        state.folded,
        state.thinned,
        state.notes,
    )


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
