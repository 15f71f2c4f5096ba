"""Per-worker findings folded into one per rule: one cause, one finding, a row per worker.

``pool-saturation`` and ``blocked-event-loop`` are judged per worker (each has
its own pool and its own loop), but a gateway of N workers under one load shows
the same cause N times. A reader wants it once: the worst worker's finding,
its title saying how many workers share it, and every worker's numbers in
``evidence["workers"]`` (the worst first). The worst worker's evidence stays at
the top level, so what read one worker's finding reads the folded one alike.
"""

from __future__ import annotations

from typing import Any

from profiler import units
from profiler.analysis.findings.common import _finding, _workers
from profiler.analysis.findings.records import SEVERITIES, Finding

FOLDED = ("pool-saturation", "blocked-event-loop")
"""The rules judged per worker that are folded into one finding."""


def fold_workers(findings: list[Finding]) -> list[Finding]:
    """``findings`` with each :data:`FOLDED` rule's per-worker findings made one."""
    kept = [finding for finding in findings if finding.rule not in FOLDED]
    for rule in FOLDED:
        mine = [finding for finding in findings if finding.rule == rule]
        if mine:
            kept.append(_folded(rule, mine))
    return kept


def _folded(rule: str, findings: list[Finding]) -> Finding:
    ordered = sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), -f.score, f.title))
    worst = ordered[0]
    rows = [_row(finding) for finding in ordered]
    if len(ordered) == 1:
        title = worst.title
    else:
        pids = [int(row["worker_pid"]) for row in rows if row.get("worker_pid") is not None]
        title = f"{_workers(sorted(pids))} ({_shares(rule, rows)}); the worst: {worst.title}"
    evidence: dict[str, Any] = {**worst.evidence, "workers": rows}
    return _finding(rule, worst.severity, title, evidence, sum(f.score for f in ordered))


def _row(finding: Finding) -> dict[str, Any]:
    """A worker's row: its severity, title and evidence (less any nested table)."""
    return {
        "severity": finding.severity,
        "title": finding.title,
        **{key: value for key, value in finding.evidence.items() if key != "workers"},
    }


def _shares(rule: str, rows: list[dict[str, Any]]) -> str:
    """``66%, 60% of the time at the cap`` / ``56%, 30% of loop samples blocked``."""
    if rule == "blocked-event-loop":
        shares = [row.get("blocked_share") for row in rows]
        what = "of loop samples waiting for a connection"
    else:
        shares = [row.get("share_at_cap") for row in rows]
        what = "of the time at the pool's cap"
    known = [units.percent(float(share)) for share in shares if share is not None]
    return f"{', '.join(known)} {what}" if known else "each its own"
