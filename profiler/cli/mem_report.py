"""``profiler mem report``: memray's reports of captures, their top sites, a pool's sum."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from profiler import units
from profiler.cli import console
from profiler.cli.options import JSON_OPTION

if TYPE_CHECKING:
    from profiler.memory.pool import PoolSummary
    from profiler.memory.reader import CaptureSummary
    from profiler.memory.reports import PlannedReport, ReportResult
    from profiler.memory.stacks import Frame, Site

SHOWN_CALLERS = 3


def report(
    captures: list[Path] = typer.Argument(
        ...,
        help="memray capture files (.bin); several = the workers of one pool, also summed.",
        metavar="CAPTURE",
        show_default=False,
    ),
    kind: list[str] = typer.Option(
        ["flamegraph"],
        "--kind",
        "-k",
        metavar="KIND",
        help="Reports to write: flamegraph, table, tree, stats, summary, all or none. "
        "Repeatable, or comma-separated.",
    ),
    # typer declarations alike in shape to mem attach's and report's (-o): each its own help
    temporal: bool = typer.Option(
        False,
        "--temporal",
        help="Also the temporal flamegraph (memory over time; not for aggregated captures).",
    ),
    leaks: bool = typer.Option(
        False,
        "--leaks",
        help="Also the flamegraph of memory never freed (meaningful only for captures taken "
        "with --trace-python-allocators or PYTHONMALLOC=malloc).",
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        metavar="DIR",
        help="Directory for the reports; default: beside each capture.",
        show_default=False,
    ),
    top: int = typer.Option(10, "--top", "-n", min=1, help="Allocation sites listed per ranking."),
    offline: bool = typer.Option(
        False, "--offline", help="Embed the JavaScript in HTML reports (bigger files, no CDN)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite reports of the same name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Reports of memray captures: memray's own files, the top allocation sites, a pool's sum.

    Writes memray's flamegraph, table, tree, stats and summary beside each capture (or
    into -o DIR), and lists the top allocation sites at the peak and by total allocated;
    for several captures (one per worker), those sites summed over the pool.

    Example: profiler mem report memray-4242.bin --kind all;
    a pool: profiler mem report caps/*.bin --kind none --json | jq .combined
    """
    from profiler.memory import reports
    from profiler.memory.pool import combine
    from profiler.memory.reader import require_memray

    kinds = reports.parse_kinds(kind)
    names = reports.report_names(kinds, temporal=temporal, leaks=leaks)
    require_memray()
    captures = _unique(captures)
    planned = reports.prepare(captures, names, output, force=force)
    summaries = _read_captures(captures, leaks=leaks)
    results, skipped = _write_reports(planned, summaries, output, offline=offline)

    pool = combine(list(summaries.values())) if len(summaries) > 1 else None
    if as_json:
        console.print_json(_as_json(summaries, results, skipped, pool, top))
    else:
        for summary in summaries.values():
            _print_capture(summary, [r for r in results if r.report.capture == summary.path], top)
        if pool is not None:
            _print_pool(pool, top)
    _end(results, output)


def _read_captures(captures: list[Path], *, leaks: bool) -> dict[Path, CaptureSummary]:
    """Each capture's summary, its warnings said as they come."""
    from profiler.memory.reader import read_capture

    summaries: dict[Path, CaptureSummary] = {}
    for capture in captures:
        console.info(f"reading {capture}")
        summary = summaries[capture] = read_capture(capture)
        for warning in summary.warnings:
            console.warn(f"{capture}: {warning}")
        if leaks and not (summary.trace_python_allocators or summary.python_allocator == "malloc"):
            console.warn(
                f"{capture}: the leaks flamegraph of a capture without --trace-python-allocators "
                "(or PYTHONMALLOC=malloc) counts memory pymalloc keeps for reuse as leaked: "
                "trust only big leaks"
            )
    return summaries


def _write_reports(
    planned: list[PlannedReport],
    summaries: dict[Path, CaptureSummary],
    output: Path | None,
    *,
    offline: bool,
) -> tuple[list[ReportResult], dict[Path, dict[str, str]]]:
    """Write what memray can write for each capture; say what it cannot, once per reason."""
    import shlex

    from profiler.memory import reports
    from profiler.outputs import prepare_directory

    to_write: list[PlannedReport] = []
    skipped: dict[Path, dict[str, str]] = {capture: {} for capture in summaries}
    for planned_report in planned:
        reason = reports.unsupported(planned_report.name, summaries[planned_report.capture])
        if reason:
            skipped[planned_report.capture][planned_report.name] = reason
        else:
            to_write.append(planned_report)
    for capture, reasons in skipped.items():
        for reason in dict.fromkeys(reasons.values()):
            which = ", ".join(name for name, why in reasons.items() if why == reason)
            console.warn(f"{capture}: no {which} report: {reason}")
    if not to_write:
        return [], skipped
    if output is not None:
        prepare_directory(output)
    for planned_report in to_write:
        if planned_report.name != "tree":
            console.detail(shlex.join(reports.memray_argv(planned_report, offline=offline)))
    console.info(f"writing {len(to_write)} report(s)")
    results = reports.write_reports(to_write, summaries, offline=offline)
    for result in results:
        console.detail(f"{result.report.path}: {units.seconds(result.seconds, 2)}")
    return results, skipped


def _end(results: list[ReportResult], output: Path | None) -> None:
    """The line naming what was written; exit 7 when memray failed a report."""
    from profiler.errors import InputError

    written = [result for result in results if result.error is None]
    if written:
        where = f"into {output}/" if output is not None else "beside the capture(s)"
        console.info(f"wrote {len(written)} report(s) {where}")
    failed = [result for result in results if result.error is not None]
    if failed:
        first = failed[0]
        more = f"; {len(failed) - 1} more failed" if len(failed) > 1 else ""
        raise InputError(
            f"{first.report.capture}: memray could not write the {first.report.name} report "
            f"({first.error}){more}",
            hint="run again with -v for the memray commands and try them by hand",
        )


def _unique(captures: list[Path]) -> list[Path]:
    """Each capture once: the same file twice would be summed twice in the pool."""
    seen: dict[Path, Path] = {}
    for capture in captures:
        key = capture.resolve()
        if key in seen:
            console.warn(f"{capture} given twice; reading it once")
        else:
            seen[key] = capture
    return list(seen.values())


def _as_json(
    summaries: dict[Path, CaptureSummary],
    results: list[ReportResult],
    skipped: dict[Path, dict[str, str]],
    pool: PoolSummary | None,
    top: int,
) -> dict[str, Any]:
    captures = []
    for path, summary in summaries.items():
        mine = [result for result in results if result.report.capture == path]
        captures.append(
            {
                **summary.to_json(top),
                "reports": {r.report.name: str(r.report.path) for r in mine if r.error is None},
                "skipped": skipped[path],
                "failed": {r.report.name: r.error for r in mine if r.error is not None},
            }
        )
    return {"captures": captures, "combined": pool.to_json(top) if pool else None}


def _where(frame: Frame) -> str:
    """``function (dir/file.py:12)``: the last two parts of the path are enough to find it."""
    parts = Path(frame.file).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else frame.file
    return f"{frame.function} ({short}:{frame.line})"


def _callers(stack: tuple[Frame, ...]) -> str:
    return " < ".join(_where(frame) for frame in stack[1 : 1 + SHOWN_CALLERS]) or "-"


def _print_capture(summary: CaptureSummary, results: list[ReportResult], top: int) -> None:
    from rich.text import Text

    from profiler.report.tables import keep_whole

    facts = [f"pid {summary.pid}", f"peak {units.size(summary.peak_memory_bytes)}"]
    if summary.total_allocated_bytes is not None:
        facts.append(
            f"{units.size(summary.total_allocated_bytes)} allocated "
            f"in {summary.total_allocations:,} allocations"
        )
    if summary.duration_seconds is not None:
        facts.append(f"over {units.seconds(summary.duration_seconds, 1)}")
    if summary.aggregated:
        facts.append("aggregated")
    if not summary.complete:
        facts.append("incomplete")
    console.out.print(f"[bold]{summary.path}[/bold]: {', '.join(facts)}", highlight=False)
    console.out.print(f"  {summary.command_line}", markup=False, highlight=False)
    rankings = [("at the peak", summary.by_peak, summary.peak_memory_bytes)]
    if summary.by_total is not None:
        whole = summary.total_allocated_bytes or 0
        rankings.append(("by total allocated", summary.by_total, whole))
    for title, sites, whole in rankings:
        _print_sites(f"top sites {title}", sites[:top], whole or 0)
    if results:
        table = console.listing("reports")
        table.add_column("report")
        table.add_column("file", overflow="fold")
        for result in results:
            table.add_row(
                result.report.name, Text(str(result.report.path) if not result.error else "-")
            )
        keep_whole(table, "file")
        console.out.print(table)
    console.out.print()


def _print_sites(title: str, sites: tuple[Site, ...], whole: int) -> None:
    from rich.text import Text

    from profiler.report.tables import keep_words

    table = console.listing(title)
    for column, justify in (("bytes", "right"), ("share", "right"), ("allocs", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("site", overflow="fold")
    table.add_column("called from", overflow="fold")
    for site in sites:
        table.add_row(
            units.size(site.bytes),
            units.percent(site.bytes / whole, 1) if whole else "-",
            f"{site.allocations:,}",
            Text(_where(site.frame)),
            Text(_callers(site.stack)),
        )
    keep_words(table, "site", "called from")
    console.out.print(table)


def _print_pool(pool: PoolSummary, top: int) -> None:
    from rich.text import Text

    from profiler.memory.reports import stem
    from profiler.report.tables import keep_whole, keep_words

    pids = [worker.pid for worker in pool.workers]
    unique_pids = len(set(pids)) == len(pids)
    labels = {w.path: str(w.pid) if unique_pids else stem(w.path) for w in pool.workers}

    console.out.print(
        f"[bold]pool of {len(pool.workers)} workers[/bold]: peaks sum to "
        f"{units.size(pool.peak_memory_bytes)} (an upper bound: workers peak at different times)",
        highlight=False,
    )
    table = console.listing("workers")
    for column in ("worker", "peak", "allocated", "capture"):
        table.add_column(column, justify="left" if column in ("worker", "capture") else "right")
    for worker in pool.workers:
        allocated = worker.total_allocated_bytes
        table.add_row(
            labels[worker.path],
            units.size(worker.peak_memory_bytes),
            units.size(allocated) if allocated is not None else "-",
            Text(str(worker.path)),
        )
    keep_whole(table, "worker", "capture")
    console.out.print(table)
    rankings = [("at the peak, summed over the pool", pool.by_peak, pool.peak_memory_bytes)]
    if pool.by_total is not None:
        whole = pool.total_allocated_bytes or 0
        rankings.append(("by total allocated, summed over the pool", pool.by_total, whole))
    for title, sites, whole in rankings:
        table = console.listing(f"top sites {title}")
        table.add_column("bytes", justify="right")
        table.add_column("share", justify="right")
        table.add_column("site", overflow="fold")
        table.add_column("per worker", overflow="fold")
        for site in sites[:top]:
            table.add_row(
                units.size(site.bytes),
                units.percent(site.bytes / whole, 1) if whole else "-",
                Text(_where(site.frame)),
                ", ".join(f"{labels[w.path]}: {units.size(w.bytes)}" for w in site.workers),
            )
        keep_words(table, "site", "per worker")
        console.out.print(table)
