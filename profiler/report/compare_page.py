"""A before/after comparison as a Markdown page: what ``session compare`` prints, for the site.

Deterministic (no clock: times come from the sessions) and redacted: code
paths and finding titles go through the caller's
:class:`~profiler.report.redact.Redaction` (queries in a title's code spans
through ``query``, everything else through ``text``).
"""

from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING, Any

from profiler.report import markdown as md
from profiler.report.redact import Redaction, inline

if TYPE_CHECKING:
    from profiler.analysis.findings import Finding
    from profiler.session.compare import Change, Comparison
    from profiler.session.summary import Summary

VERDICT_TEXT = {"better": "**better**", "worse": "**worse**", "same": "same", "n/a": "n/a"}


def render(comparison: Comparison, *, title: str, redaction: Redaction | None = None) -> str:
    """The page: sessions compared, changes with verdicts, held paths, findings."""
    policy = redaction or Redaction()
    before, after = comparison.before, comparison.after
    lines = [
        f"# {md.escape(policy.text(title))}",
        "",
        "| | session | started | duration | workers | transactions |",
        "|---|---|---|---:|---:|---:|",
        _session_row("before", before, policy),
        _session_row("after", after, policy),
        "",
        _summary_sentence(comparison),
        "",
        "## Changes",
        "",
        "A change smaller than the measure's noise allowance (sampling makes two runs of "
        "the same code differ a little) is *same*.",
        "",
        "| measure | before | after | change |",
        "|---|---:|---:|---|",
    ]
    lines += [_change_row(change) for change in comparison.changes]
    lines += ["", "## Connection-seconds held by code path", ""]
    if comparison.paths:
        lines += ["| before | after | code path |", "|---:|---:|---|"]
        lines += [
            f"| {path.before_seconds:.1f} s | {path.after_seconds:.1f} s "
            f"| {md.code(policy.text(path.path))} |"
            for path in comparison.paths
        ]
    else:
        lines.append("No held connection was attributed to code in either session.")
    lines += ["", "## Findings", ""]
    lines += _findings("Resolved", "in the before session, gone after", comparison.resolved, policy)
    lines += _findings(
        "Appeared", "new after, or more severe than before", comparison.appeared, policy
    )
    lines += _findings("After", "every finding of the after session", after.findings, policy)
    if comparison.failed_on:
        lines += [
            "",
            "Gates failed: " + ", ".join(f"`{rule}`" for rule in comparison.failed_on) + ".",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _session_row(label: str, summary: Summary, policy: Redaction) -> str:
    session, metrics = summary.session, summary.metrics
    started = session.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    stopped = " (stopped early)" if session.interrupted else ""
    return (
        f"| {label} | {md.escape(policy.text(session.name))}{stopped} | {started} "
        f"| {metrics.duration_seconds:.0f} s | {metrics.workers} | {metrics.transactions} |"
    )


def _summary_sentence(comparison: Comparison) -> str:
    counts = {verdict: 0 for verdict in VERDICT_TEXT}
    for change in comparison.changes:
        counts[change.verdict] += 1
    return (
        f"{counts['better']} measures better, {counts['worse']} worse, {counts['same']} the "
        f"same, {counts['n/a']} not measured in both; {len(comparison.resolved)} findings "
        f"resolved, {len(comparison.appeared)} appeared."
    )


def _change_row(change: Change) -> str:
    unit = change.measure.unit
    return (
        f"| {change.measure.label} | {_format(change.before, unit)} "
        f"| {_format(change.after, unit)} | {VERDICT_TEXT[change.verdict]} |"
    )


def _findings(heading: str, meaning: str, findings: list[Finding], policy: Redaction) -> list[str]:
    lines = [f"### {heading}", "", f"*{meaning}*", ""]
    if not findings:
        return [*lines, "None.", ""]
    for finding in findings:
        lines.append(f"- **{finding.severity}** `{finding.rule}`: {_title(policy, finding.title)}")
    return [*lines, ""]


def _title(policy: Redaction, title: str) -> str:
    """A finding's title redacted, its code spans kept as code and the rest escaped."""
    return md.with_code_spans(inline(policy, title))


def _format(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    suffix = f" {unit}" if unit else ""
    if isinstance(value, float):
        return f"{value:.2f}{suffix}"
    return f"{value}{suffix}"
