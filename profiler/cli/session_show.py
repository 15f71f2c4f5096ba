"""``profiler session show`` and ``session compare``, imported only when they run (pandas)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler import units
from profiler.cli import console
from profiler.errors import ChecksFailed
from profiler.session.compare import format_value

if TYPE_CHECKING:
    from rich.table import Table

    from profiler.analysis.findings import Finding, Thresholds
    from profiler.session.compare import Change, Comparison
    from profiler.session.summary import Summary

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
HELD_ROWS = 10
LINT_STEP = "`profiler lint`"  # a mechanism step joined from lint (session show --source)


def show_command(
    directory: Path, thresholds: Thresholds, *, as_json: bool, source: Path | None = None
) -> None:
    summary = _summarize(directory, thresholds)
    if source is not None:
        from profiler.lint import lint_path
        from profiler.report.diagnosis_source import join_lint

        summary.diagnosis = join_lint(summary.diagnosis, lint_path(source))
    if as_json:
        console.print_json(summary.to_json())
        return
    out = console.out
    out.print(_heading(summary))
    for name, probe in summary.to_json()["probes"].items():
        if probe["status"] in ("failed", "partial"):
            console.warn(f"probe {name} {probe['status']}: {probe['error']}")
    for line in diagnosis_lines(summary):
        out.print(line)
    if not summary.findings:
        out.print("no findings: nothing crossed a threshold")
    for finding in summary.findings:
        out.print(_finding_line(finding))
    out.print(_metrics_table(summary))
    if summary.pools:
        out.print(_pools_table(summary))
    if summary.metrics.top_paths:
        out.print(_paths_table(summary))
    if not summary.episodes.empty:
        out.print(_held_table(summary))


def compare_command(
    before: Path, after: Path, thresholds: Thresholds, fail_on: list[str], *, as_json: bool
) -> None:
    from profiler.session.compare import compare

    comparison = compare(_summarize(before, thresholds), _summarize(after, thresholds), fail_on)
    if as_json:
        console.print_json(comparison.to_json())
    else:
        _print_comparison(comparison)
    if comparison.failed_on:
        raise ChecksFailed(
            f"{after} is worse than {before} on: {', '.join(comparison.failed_on)}",
            hint="see the changes marked worse above (or in --json)",
        )


def _summarize(directory: Path, thresholds: Thresholds) -> Summary:
    from profiler.session import open as open_session
    from profiler.session.summary import summarize

    return summarize(open_session(directory), thresholds)


def _heading(summary: Summary) -> str:
    session = summary.session
    metrics = summary.metrics
    state = " [red](interrupted)[/]" if session.interrupted else ""
    return (
        f"[bold]session {session.name}[/]{state}  {session.started_at:%Y-%m-%d %H:%M:%S} UTC, "
        f"{units.seconds(metrics.duration_seconds, 0)}, {metrics.workers} worker(s), "
        f"{metrics.transactions} transactions seen, stacks from {summary.attribution}"
    )


def diagnosis_lines(summary: Summary) -> list[str]:
    """The Diagnosis, first: one line when no cause was found, else per cause its title,
    mechanism chain, where, fix and evidence."""
    from rich.markup import escape

    if not summary.diagnosis:
        return ["Diagnosis: no cause found"]
    lines = [f"[bold]Diagnosis[/]: {len(summary.diagnosis)} cause(s), most important first"]
    for number, cause in enumerate(summary.diagnosis, 1):
        style = SEVERITY_STYLE.get(cause.severity, "")
        lines.append(
            f"{number}. [{style}]{cause.severity}[/] {escape(cause.title)} ({cause.cause})"
        )
        chain = [step for step in cause.mechanism if not step.startswith(LINT_STEP)]
        lines.append("   what:  " + escape(" → ".join(chain)))
        for step in cause.mechanism:
            if step.startswith(LINT_STEP):
                lines.append("   lint:  " + escape(step.split(": ", 1)[1]))
        for where in cause.where:
            place = f"{escape(where.file)}:{where.line}"
            lines.append(f"   where: {place} {escape(where.function)} ({where.role})")
        lines.append(f"   fix:   {escape(cause.fix)} (docs: {cause.fix_link})")
        if cause.evidence:
            lines.append(f"   evidence: {', '.join(cause.evidence)}")
    return lines


def _finding_line(finding: Finding) -> str:
    style = SEVERITY_STYLE.get(finding.severity, "")
    return f"[{style}]{finding.severity:<8}[/] {finding.rule:<20} {finding.title}"


def _metrics_table(summary: Summary) -> Table:
    from profiler.session.compare import MEASURES

    table = console.listing("measures")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for measure in MEASURES:
        value = getattr(summary.metrics, measure.name)
        table.add_row(measure.label, format_value(value, measure.unit))
    return table


def _pools_table(summary: Summary) -> Table:
    table = console.listing("pools: what each worker's pool can serve")
    table.add_column("worker", justify="right", no_wrap=True)
    table.add_column("capacity", overflow="fold")
    for pool in summary.pools:
        table.add_row(str(pool.worker_pid), pool.capacity_text())
    return table


def _paths_table(summary: Summary) -> Table:
    from profiler.report.tables import keep_words

    table = console.listing("code paths by connection-seconds held")
    for column in ("held s", "share", "workers", "path"):
        table.add_column(column, justify="right" if column != "path" else "left", overflow="fold")
    for held in summary.metrics.top_paths:
        table.add_row(
            f"{held.seconds:.2f}" if held.seconds < 0.1 else f"{held.seconds:.1f}",
            units.percent(held.share),
            " ".join(map(str, held.owner_pids)) or "-",
            held.path,
        )
    keep_words(table, "workers", "path")
    return table


def _held_table(summary: Summary) -> Table:
    from profiler.report.tables import keep_whole
    from profiler.session.summary import held_connections

    rows = held_connections(summary.episodes, summary.session.start, limit=HELD_ROWS)
    table = console.listing(f"longest transactions ({len(rows)} of {len(summary.episodes)})")
    for column in ("backend", "owner", "start", "held s", "idle s", "query"):
        table.add_column(column, justify="left" if column == "query" else "right", overflow="fold")
    for row in rows[:HELD_ROWS]:
        table.add_row(
            str(row["backend_pid"]),
            _owner_cell(row),
            units.offset(row["start_offset"]),
            f"{row['duration']:.1f}{'+' if row['open'] else ''}",
            f"{row['idle_seconds']:.1f}",
            _one_line(row["last_query"]),
        )
    keep_whole(table, "backend", "owner")
    return table


def _owner_cell(row: dict[str, Any]) -> str:
    """The worker (and the pooler it was found through), or the pooler: never as a worker."""
    if row["owner_pid"] is not None:
        return str(row["owner_pid"]) + (f" via {row['via']}" if row.get("via") else "")
    return str(row.get("owner_label") or "?")


def _print_comparison(comparison: Comparison) -> None:
    from profiler.report.tables import keep_words

    out = console.out
    out.print(
        f"[bold]before[/] {comparison.before.session.name}   [bold]after[/] "
        f"{comparison.after.session.name}"
    )
    table = console.listing()
    for column in ("measure", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for change in comparison.changes:
        table.add_row(
            change.measure.label,
            format_value(change.before, change.measure.unit),
            format_value(change.after, change.measure.unit),
            _verdict(change),
        )
    out.print(table)
    if comparison.paths:
        paths = console.listing("connection-seconds held by code path")
        for column in ("before s", "after s", "path"):
            paths.add_column(
                column, justify="left" if column == "path" else "right", overflow="fold"
            )
        for path in comparison.paths:
            paths.add_row(f"{path.before_seconds:.1f}", f"{path.after_seconds:.1f}", path.path)
        keep_words(paths, "path")
        out.print(paths)
    persisting = len(comparison.after.findings) - len(comparison.appeared)
    out.print(
        f"findings: {len(comparison.resolved)} resolved, {len(comparison.appeared)} new "
        f"in after, {persisting} in both"
    )
    for finding in comparison.resolved:
        out.print(f"[green]resolved[/] {finding.severity:<8} {finding.rule}: {finding.title}")
    for finding in comparison.appeared:
        out.print(f"[red]new[/]      {finding.severity:<8} {finding.rule}: {finding.title}")


def _verdict(change: Change) -> str:
    style = {"better": "green", "worse": "bold red"}.get(change.verdict)
    return f"[{style}]{change.verdict}[/]" if style else change.verdict


def _one_line(text: str | None, width: int = 80) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
