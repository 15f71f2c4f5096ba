"""Findings: rules with thresholds over a session's evidence, each with the numbers to act on.

Pure functions, no I/O and no clock: the caller computes the
:class:`Evidence` (episodes, counts held, the hold profile, stack samples,
RSS, worker events) and :func:`evaluate` runs every rule over it. Each rule
is its own function returning zero or more :class:`Finding`, listed here in
the order ties within a severity are broken (:data:`RULES`):

* ``worker-vanished``: a worker disappeared; critical when OOM-killed.
* ``held-code-path``: the code paths that held connections longest, when
  some transaction sat idle in transaction beyond the threshold; critical
  when the top path holds half of the held time.
* ``idle-in-transaction``: transactions idle in transaction beyond the
  threshold; critical when one lasted ten times the threshold, or ten did.
* ``pool-saturation``: a worker at its pool cap for a share of snapshots;
  critical when stack samples show threads waiting for a connection.
* ``blocked-event-loop``: a worker's event loop thread asleep in a pool
  checkout (a sync engine under ``async def``), which stops the requests that
  would release a connection; critical when frequent or long.
* ``memory-limit``: a worker's peak RSS near its memory limit; critical.
* ``stuck-query``: one query text left idle in transaction for long; warning.
* ``rss-growth``: a worker's RSS growing steadily; warning, critical near
  its memory limit.

``pool-saturation`` and ``blocked-event-loop`` are judged per worker and then
folded (:func:`~profiler.analysis.findings.fold.fold_workers`): one finding per
rule, the worst worker's at the top, every worker's row in
``evidence["workers"]``.

Evidence dicts hold plain Python values only (no numpy scalars, ``None``
rather than NaN), so ``json.dumps(finding.to_json(), allow_nan=False)`` works.
"""

from __future__ import annotations

from profiler.analysis.findings.common import normalise_query
from profiler.analysis.findings.fold import fold_workers
from profiler.analysis.findings.holds import held_code_path, idle_in_transaction, stuck_query
from profiler.analysis.findings.loop import blocked_event_loop
from profiler.analysis.findings.memory import memory_limit, rss_growth
from profiler.analysis.findings.pool import pool_saturation
from profiler.analysis.findings.records import (
    DEFAULT_THRESHOLDS,
    LISTED,
    QUERY_CHARS,
    RULES,
    SEVERITIES,
    STUCK_QUERIES_LISTED,
    TITLE_QUERY_CHARS,
    Evidence,
    Finding,
    Thresholds,
)
from profiler.analysis.findings.workers import worker_vanished
from profiler.analysis.stack_kinds import is_blocked_on_pool, is_event_loop, is_pool_wait
from profiler.units import MIB

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LISTED",
    "MIB",
    "QUERY_CHARS",
    "RULES",
    "SEVERITIES",
    "STUCK_QUERIES_LISTED",
    "TITLE_QUERY_CHARS",
    "Evidence",
    "Finding",
    "Thresholds",
    "blocked_event_loop",
    "evaluate",
    "fold_workers",
    "held_code_path",
    "idle_in_transaction",
    "is_blocked_on_pool",
    "is_event_loop",
    "is_pool_wait",
    "memory_limit",
    "normalise_query",
    "pool_saturation",
    "rss_growth",
    "stuck_query",
    "worker_vanished",
]


def evaluate(evidence: Evidence, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """All findings, most important first: severity (critical, warning, info), then rule
    priority (:data:`RULES`), then score (highest first), then title."""
    found = [
        *worker_vanished(evidence, thresholds),
        *held_code_path(evidence, thresholds),
        *idle_in_transaction(evidence, thresholds),
        *pool_saturation(evidence, thresholds),
        *blocked_event_loop(evidence, thresholds),
        *memory_limit(evidence, thresholds),
        *stuck_query(evidence, thresholds),
        *rss_growth(evidence, thresholds),
    ]
    return sorted(fold_workers(found), key=_rank)


def _rank(finding: Finding) -> tuple[int, int, float, str]:
    return (
        SEVERITIES.index(finding.severity),
        RULES.index(finding.rule),
        -finding.score,
        finding.title,
    )
