"""The top of the findings page: what ran, what happened and what to change, in one screen.

A reader under pressure reads the first screen and stops. So it says the load the session
ran under (``load.json``), then the Diagnosis: each cause in a sentence or two with the code
to change and the fix, beside the two plots that show it (connections held against the pool
cap, idle-in-transaction age). Per-worker findings of one rule are one line, not one
section per worker. A healthy session is one line saying so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from profiler import units
from profiler.report import markdown as md
from profiler.report.page_text import RULE_HEADINGS, SEVERITY_ORDER, cut, plural

if TYPE_CHECKING:
    from profiler.analysis.diagnosis import Cause
    from profiler.analysis.findings import Finding
    from profiler.report.plots import Plot
    from profiler.report.scrub import Scrub
    from profiler.session.load_record import LoadRecord
    from profiler.session.summary import Summary

LEAD_PLOTS = ("connections-held", "idle-in-transaction-age")
"""The two plots the Diagnosis stands beside: how many connections workers held, how long
they sat idle in a transaction."""
FIX_PAGES = {
    "held-code-path": "how-to/fix-with-short-sessions.md",
    "idle-in-transaction": "how-to/fix-with-short-sessions.md",
    "pool-saturation": "how-to/fix-with-short-sessions.md",
    "blocked-event-loop": "how-to/fix-with-short-sessions.md",
}
"""The how-to that fixes each rule's finding, relative to the site's docs folder."""
RULE_REFERENCE = "reference/findings.md"
LEAD_CAPTION = (
    "Per `pg_stat_activity` snapshot: transactions held per worker; the oldest and p95 age "
    "of idle-in-transaction connections. Dashed: pool cap, threshold; shaded: the load."
)
LEAD_TITLE_CHARS = 150  # the whole title is under Findings; the lead stays one screen


@dataclass(frozen=True, slots=True)
class MergedFinding:
    """The findings of one rule and severity, across workers: one line on the page."""

    rule: str
    severity: str
    findings: tuple[Finding, ...]


def merge(findings: list[Finding]) -> list[MergedFinding]:
    """Findings grouped by rule and severity, in the order the first of each came (most
    important first): per-worker duplicates become one line."""
    groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(finding.rule, finding.severity)].append(finding)
    return [
        MergedFinding(rule, severity, tuple(found)) for (rule, severity), found in groups.items()
    ]


def load_sentence(load: LoadRecord | None) -> str:
    """The load conditions in one sentence, with the error rate and what an error is."""
    if load is None:
        return "No load was recorded with this session (`load.json`): traffic is unknown."
    seconds = max(load.ended_at - load.started_at, 0.0)
    rate = f" ({units.percent(min(load.errors / load.requests, 1.0))})" if load.requests else ""
    p95 = f", p95 latency {load.p95_ms:.0f} ms" if load.p95_ms is not None else ""
    return (
        f"Load: {plural(load.users, 'concurrent user', 'concurrent users')} for "
        f"{units.duration(seconds)}: {load.requests:,} requests finished, "
        f"{load.rps:.2f} successful req/s{p95}; {load.errors:,} errors{rate}, "
        "each a status of 400 or over, a timeout or a refused connection."
    )


def lead(
    summary: Summary,
    plot_list: list[Plot],
    scrub: Scrub,
    assets: str,
    docs_prefix: str | None,
    timelines: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """The Diagnosis section's Markdown lines."""
    lines = ["## Diagnosis", "", *_lead_plots(plot_list, assets, timelines)]
    causes: list[Cause] = list(getattr(summary, "diagnosis", []) or [])
    merged = merge(summary.findings)
    if not causes and not merged:
        thresholds = summary.thresholds
        lines += [
            f"Healthy: in {units.duration(summary.metrics.duration_seconds)}, "
            "no transaction sat idle "
            f"over {units.duration(thresholds.idle_in_transaction_seconds)} and no other finding "
            "crossed its threshold.",
            "",
        ]
    for cause in causes:
        lines += _cause(cause, scrub, docs_prefix)
    if not causes:
        for item in merged:
            lines.append(_merged_line(item, scrub, docs_prefix))
        if merged:
            lines.append("")
    return lines


def _cause(cause: Cause, scrub: Scrub, docs_prefix: str | None) -> list[str]:
    """The cause in one bold line, then how it happened, what to change and the fix: the
    mechanism's steps read as one chain (``→``), not as sentences run together."""
    title = md.with_code_spans(scrub.title(cause.title))
    steps = [md.with_code_spans(scrub.text(text)).rstrip(".") for text in cause.mechanism]
    where = "; ".join(
        f"{md.code(f'{place.file}:{place.line}')} ({md.escape(place.function)}, {place.role})"
        for place in cause.where
    )
    link = cause.fix_link
    if link and "://" not in link:  # a page of the site: only where the page is published
        link = docs_prefix + link if docs_prefix is not None else ""
    fix = md.with_code_spans(cause.fix).rstrip(".")
    lines = [f"- **{title}** ({cause.severity})", ""]
    if steps:
        lines += [f"    - How: {' → '.join(steps)}."]
    if where:
        lines += [f"    - Change: {where}."]
    lines += [f"    - Fix: [{fix}]({link})." if link else f"    - Fix: {fix}.", ""]
    return lines


def _merged_line(item: MergedFinding, scrub: Scrub, docs_prefix: str | None) -> str:
    heading = RULE_HEADINGS.get(item.rule, item.rule)
    first = md.with_code_spans(cut(scrub.title(item.findings[0].title), LEAD_TITLE_CHARS))
    more = len(item.findings) - 1
    others = f" (and {plural(more, 'more like it', 'more like it')})" if more else ""
    fix = FIX_PAGES.get(item.rule)
    links = ""
    if docs_prefix is not None:
        parts = [f"[rule]({docs_prefix}{RULE_REFERENCE})"]
        if fix:
            parts.insert(0, f"[how to fix]({docs_prefix}{fix})")
        links = " " + " · ".join(parts)
    return f"- **{heading}** ({item.severity}): {first}{others}.{links}"


def _lead_plots(
    plot_list: list[Plot], assets: str, timelines: set[str] | frozenset[str]
) -> list[str]:
    """The two plots side by side: raw HTML, the one layout GitHub and MkDocs both keep.
    Each SVG sits in a ``div.timeline`` naming its figure file: the site draws it
    interactive (``timelines.js``), anywhere else the SVG is the picture."""
    chosen = [p for name in LEAD_PLOTS for p in plot_list if p.name == name and p.path]
    if not chosen:
        return []
    return [
        plot_row(
            "lead-plots",
            [
                (
                    f"{assets}/{p.path.name}",
                    p.title,
                    p.name in timelines and f"{assets}/{p.name}.json",
                )
                for p in chosen
                if p.path is not None
            ],
        ),
        "",
        LEAD_CAPTION,
        "",
    ]


def plot_row(css: str, plots: list[tuple[str, str, str | bool]]) -> str:
    """``(svg, title, figure file or False)`` side by side, each a timeline when it has one."""
    cells = []
    for svg, title, figure in plots:
        image = f'<img src="{svg}" alt="{md.escape(title)}" width="49%">'
        if figure:
            image = f'<div class="timeline" data-figure="{figure}">{image}</div>'
        cells.append(image)
    return f'<div class="{css}">{"".join(cells)}</div>'


def severity_counts(findings: list[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_ORDER}
    return ", ".join(f"{counts[s]} {s}" for s in SEVERITY_ORDER if counts[s])
