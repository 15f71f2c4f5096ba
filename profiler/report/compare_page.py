"""A before/after comparison as a Markdown page: what ``session compare`` prints, for the site.

Deterministic (no clock: times come from the sessions) and redacted: code
paths and finding titles go through the caller's
:class:`~profiler.report.redact.Redaction` (queries in a title's code spans
through ``query``, everything else through ``text``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timezone
from typing import TYPE_CHECKING

from profiler import units
from profiler.report import markdown as md
from profiler.report.redact import Redaction, inline
from profiler.session.compare import format_value

if TYPE_CHECKING:
    from profiler.analysis.findings import Finding
    from profiler.session.compare import Change, Comparison
    from profiler.session.summary import Summary

_LOCATION = re.compile(r" \([^()]*:\d+\)")
VERDICT_TEXT = {"better": "**better**", "worse": "**worse**", "same": "same", "n/a": "n/a"}


def render(
    comparison: Comparison,
    *,
    title: str,
    redaction: Redaction | None = None,
    figures: Sequence[tuple[str, str, str]] = (),
    links: Mapping[str, str] | None = None,
) -> str:
    """The page: the verdict, the overlaid plots (``figures``: file names beside the page,
    with their titles), changes with their %-change, held code paths, findings. ``links``
    (``before``/``after`` to the sessions' own pages) names each session as a link."""
    policy = redaction or Redaction()
    before, after = comparison.before, comparison.after
    lines = [
        f"# {md.escape(policy.text(title))}",
        "",
        verdict(comparison),
        "",
    ]
    if figures:
        from profiler.report.lead_section import plot_row

        lines += [plot_row("compare-plots", [(svg, text, json) for svg, text, json in figures]), ""]
    lines += [
        "| | session | started | duration | workers | transactions | load |",
        "|---|---|---|---:|---:|---:|---|",
        _session_row("before", before, policy, (links or {}).get("before")),
        _session_row("after", after, policy, (links or {}).get("after")),
        "",
        _summary_sentence(comparison),
        "",
        "## Changes",
        "",
        "A change smaller than the measure's noise allowance (sampling makes two runs of "
        "the same code differ a little) is *same*. *Change* is after against before.",
        "",
        "| measure | before | after | change | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [_change_row(change) for change in comparison.changes]
    lines += _error_row(before, after)
    lines += ["", "## Connection-seconds held by code path", ""]
    paths = by_function(comparison)
    if paths:
        lines += [
            "Matched by endpoint and function names, not by file and line: the fix moves "
            "the code, the endpoint stays.",
            "",
            "| before | after | change | code path |",
            "|---:|---:|---:|---|",
        ]
        lines += [
            f"| {units.seconds(b, 1)} | {units.seconds(a, 1)} | {units.change(b, a)} "
            f"| {md.code(policy.text(path))} |"
            for path, (b, a) in paths
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


def _session_row(label: str, summary: Summary, policy: Redaction, link: str | None) -> str:
    session, metrics = summary.session, summary.metrics
    started = session.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    stopped = " (stopped early)" if session.interrupted else ""
    name = md.escape(policy.text(session.name))
    if link:
        name = f"[{name}]({link})"
    load = session.load
    conditions = (
        f"{load.users} users, {units.seconds(load.ended_at - load.started_at, 0)}, "
        f"{load.requests:,} requests"
        if load is not None
        else "not recorded"
    )
    return (
        f"| {label} | {name}{stopped} | {started} "
        f"| {units.seconds(metrics.duration_seconds, 0)} | {metrics.workers} "
        f"| {metrics.transactions} "
        f"| {conditions} |"
    )


def error_rate(summary: Summary) -> float | None:
    """Errors per finished request of the session's load (``load.json``), None without one."""
    load = summary.session.load
    if load is None or not load.requests:
        return None
    return min(load.errors / load.requests, 1.0)


def _error_row(before: Summary, after: Summary) -> list[str]:
    rates = error_rate(before), error_rate(after)
    if rates == (None, None):
        return []
    shown = ["-" if rate is None else units.percent(rate) for rate in rates]
    b, a = rates
    change = units.change(b, a)
    better = (
        "n/a" if b is None or a is None else ("better" if a < b else "same" if a == b else "worse")
    )
    return [
        f"| load errors per finished request | {shown[0]} | {shown[1]} | {change} "
        f"| {VERDICT_TEXT[better]} |"
    ]


def verdict(comparison: Comparison) -> str:
    """The banner: better, worse or mixed, with the figures a reader repeats to others."""
    verdicts = [change.verdict for change in comparison.changes]
    worse, better = verdicts.count("worse"), verdicts.count("better")
    if worse and better:
        word = "mixed: some measures better, some worse"
    elif better:
        word = "better"
    elif worse:
        word = "worse"
    else:
        word = "no measurable change"
    facts = []
    by_name = {change.measure.name: change for change in comparison.changes}
    for name, label in (
        ("idle_age_max", "longest idle in transaction"),
        ("throughput_rps", "throughput"),
    ):
        change = by_name.get(name)
        if change is not None and change.before is not None and change.after is not None:
            unit = change.measure.unit
            facts.append(
                f"{label} {format_value(change.before, unit)} → {format_value(change.after, unit)}"
            )
    rates = error_rate(comparison.before), error_rate(comparison.after)
    if rates[0] is not None and rates[1] is not None:
        facts.append(f"errors {units.percent(rates[0])} → {units.percent(rates[1])} of requests")
    facts.append(
        f"{len(comparison.resolved)} findings resolved, {len(comparison.appeared)} appeared"
    )
    return f"> **Verdict: {word}.** " + "; ".join(facts) + "."


def by_function(comparison: Comparison) -> list[tuple[str, tuple[float, float]]]:
    """Held seconds per code path by names only (``held.py:113`` and ``fresh.py:107`` are
    the same handler), heaviest first."""
    merged: dict[str, list[float]] = {}
    for path in comparison.paths:
        key = _LOCATION.sub("", path.path)
        pair = merged.setdefault(key, [0.0, 0.0])
        pair[0] += path.before_seconds
        pair[1] += path.after_seconds
    ranked = sorted(merged.items(), key=lambda item: (-max(item[1]), item[0]))
    return [(key, (pair[0], pair[1])) for key, pair in ranked]


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
        f"| {change.measure.label} | {format_value(change.before, unit)} "
        f"| {format_value(change.after, unit)} | {units.change(change.before, change.after)} "
        f"| {VERDICT_TEXT[change.verdict]} |"
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
