"""Before and after: did the fix hold fewer connections for less time, and serve more?

Each measure knows which direction is better and how big a change must be
before it counts (sampling makes two runs of the same code differ a little):
a change smaller than ``max(absolute, relative x before)`` is "same". A gate
(``--fail-on RULE``) fails when any measure of its group got worse, or, for a
finding's rule, when the after session has that finding and the before one
did not, or has it at a higher severity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from profiler import units
from profiler.errors import UsageError
from profiler.units import MIB

if TYPE_CHECKING:
    from profiler.analysis.findings import Finding
    from profiler.session.summary import Summary

Verdict = Literal["better", "worse", "same", "n/a"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class Measure:
    """A number of :class:`~profiler.session.summary.Metrics` and how to judge its change."""

    name: str  # attribute of Metrics
    label: str
    group: str  # the --fail-on rule it belongs to
    lower_is_better: bool
    absolute: float  # changes within max(absolute, relative * |before|) are noise
    relative: float
    unit: str = ""


IDLE, HELD = "idle-in-transaction", "held-connections"
MEASURES = (
    Measure("idle_in_transaction", "idle in transaction > threshold", IDLE, True, 1, 0.1),
    Measure("idle_in_transaction_peak", "idle in transaction at once (max)", IDLE, True, 1, 0.1),
    Measure("idle_age_p50", "idle-in-tx age p50", IDLE, True, 0.25, 0.1, "s"),
    Measure("idle_age_p95", "idle-in-tx age p95", IDLE, True, 0.25, 0.1, "s"),
    Measure("idle_age_max", "idle-in-tx age max", IDLE, True, 0.5, 0.1, "s"),
    Measure("held_per_worker_mean", "connections held per worker (mean)", HELD, True, 0.25, 0.1),
    Measure("held_per_worker_max", "connections held per worker (max)", HELD, True, 1, 0.1),
    Measure("connection_seconds_held", "connection-seconds held", HELD, True, 1.0, 0.1, "s"),
    Measure("throughput_rps", "throughput", "throughput", False, 1.0, 0.1, "req/s"),
    Measure("load_errors", "load errors", "throughput", True, 5, 0.1),
    Measure("peak_rss_bytes", "peak worker RSS", "peak-rss", True, 16 * MIB, 0.1, "bytes"),
    Measure("vanished_workers", "workers vanished", "vanished-workers", True, 0, 0.0),
)
GROUPS = tuple(dict.fromkeys(m.group for m in MEASURES))


@dataclass(frozen=True, slots=True)
class Change:
    measure: Measure
    before: float | None
    after: float | None
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "measure": self.measure.name,
            "label": self.measure.label,
            "rule": self.measure.group,
            "unit": self.measure.unit,
            "before": self.before,
            "after": self.after,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class PathChange:
    path: str
    before_seconds: float
    after_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before_seconds": round(self.before_seconds, 3),
            "after_seconds": round(self.after_seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    before: Summary
    after: Summary
    changes: list[Change]
    paths: list[PathChange]
    appeared: list[Finding]  # new in after: no counterpart in before, or a less severe one
    resolved: list[Finding]  # in before, no counterpart in after
    failed_on: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "before": _identity(self.before),
            "after": _identity(self.after),
            "changes": [change.to_json() for change in self.changes],
            "held_paths": [path.to_json() for path in self.paths],
            "findings": {
                "appeared": [f.to_json() for f in self.appeared],
                "resolved": [f.to_json() for f in self.resolved],
                "persisting": len(self.after.findings) - len(self.appeared),
                "after": [f.to_json() for f in self.after.findings],
            },
            "failed_on": self.failed_on,
        }


def format_value(value: Any, unit: str) -> str:
    """A measure's value as the comparison shows it everywhere (terminal, page, docs): as
    :func:`profiler.units.measure` prints any measure.

    >>> format_value(3 * MIB, "bytes"), format_value(2.5, "req/s"), format_value(None, "")
    ('3.00 MiB', '2.50 req/s', '-')
    """
    return units.measure(value, unit)


def rules(finding_rules: tuple[str, ...]) -> tuple[str, ...]:
    """Every name ``--fail-on`` accepts."""
    return ("any", *GROUPS, *(r for r in finding_rules if r not in GROUPS))


def compare(before: Summary, after: Summary, fail_on: list[str] | None = None) -> Comparison:
    """The before/after table; ``failed_on`` lists the ``fail_on`` rules the after session broke.

    UsageError for a rule nobody knows.
    """
    from profiler.analysis.findings import RULES

    known = rules(RULES)
    for rule in fail_on or []:
        if rule not in known:
            raise UsageError(
                f"--fail-on {rule!r} is not a rule", hint=f"choose from: {', '.join(known)}"
            )
    changes = [_change(m, before, after) for m in MEASURES]
    appeared, resolved = _matched(before.findings, after.findings)
    failed = [rule for rule in fail_on or [] if _breaks(rule, changes, appeared)]
    return Comparison(before, after, changes, _paths(before, after), appeared, resolved, failed)


def verdict(measure: Measure, before: float | None, after: float | None) -> Verdict:
    if before is None or after is None:
        return "n/a"
    allowed = max(measure.absolute, measure.relative * abs(before))
    delta = after - before
    if abs(delta) <= allowed:
        return "same"
    improved = delta < 0 if measure.lower_is_better else delta > 0
    return "better" if improved else "worse"


def _change(measure: Measure, before: Summary, after: Summary) -> Change:
    old = getattr(before.metrics, measure.name)
    new = getattr(after.metrics, measure.name)
    return Change(measure, old, new, verdict(measure, old, new))


def finding_key(finding: Finding) -> tuple[str, str]:
    """What a finding is about, comparable across sessions: its rule and, where the rule
    has one, a subject that survives a restart (a query text, the endpoint or code path
    that held connections). Worker PIDs differ from one run to the next, so per-worker
    findings of one rule share a key and are matched one to one, worst first."""
    evidence = finding.evidence
    if finding.rule == "stuck-query":
        return finding.rule, str(evidence.get("query"))
    if finding.rule == "held-code-path":
        endpoints = evidence.get("endpoints") or []
        paths = evidence.get("paths") or []
        if endpoints:
            return finding.rule, str(endpoints[0].get("endpoint"))
        if paths:
            return finding.rule, str(paths[0].get("path"))
    return finding.rule, ""


def _matched(before: list[Finding], after: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """Findings of ``after`` that are new (no counterpart in ``before``, or a more severe
    one), and findings of ``before`` with no counterpart in ``after`` (resolved).

    Counterparts share a :func:`finding_key`; within a key, findings pair up worst
    first, so a third worker at its pool cap after a change that had two is one new
    finding, and two workers fixed out of three is one resolved.
    """

    def grouped(findings: list[Finding]) -> dict[tuple[str, str], list[Finding]]:
        groups: dict[tuple[str, str], list[Finding]] = {}
        for finding in findings:
            groups.setdefault(finding_key(finding), []).append(finding)
        for members in groups.values():
            members.sort(key=lambda f: (-SEVERITY_RANK[f.severity], -f.score, f.title))
        return groups

    old, new = grouped(before), grouped(after)
    appeared: list[Finding] = []
    resolved: list[Finding] = []
    for key in sorted(set(old) | set(new)):
        was, now = old.get(key, []), new.get(key, [])
        for index, finding in enumerate(now):
            if (
                index >= len(was)
                or SEVERITY_RANK[finding.severity] > SEVERITY_RANK[was[index].severity]
            ):
                appeared.append(finding)
        resolved.extend(was[len(now) :])
    order = {id(f): i for i, f in enumerate([*after, *before])}
    appeared.sort(key=lambda f: order[id(f)])
    resolved.sort(key=lambda f: order[id(f)])
    return appeared, resolved


def _breaks(rule: str, changes: list[Change], appeared: list[Finding]) -> bool:
    if rule == "any":
        return any(c.verdict == "worse" for c in changes) or bool(appeared)
    group = [c for c in changes if c.measure.group == rule]
    if any(c.verdict == "worse" for c in group):
        return True
    return any(f.rule == rule for f in appeared)


def _paths(before: Summary, after: Summary) -> list[PathChange]:
    seconds: dict[str, list[float]] = {}
    for index, summary in enumerate((before, after)):
        for held in summary.metrics.top_paths:
            seconds.setdefault(held.path, [0.0, 0.0])[index] += held.seconds
    ordered = sorted(seconds.items(), key=lambda item: -max(item[1]))
    return [PathChange(path, old, new) for path, (old, new) in ordered]


def _identity(summary: Summary) -> dict[str, Any]:
    return {
        "name": summary.session.name,
        "path": str(summary.session.path),
        "started_at": summary.session.started_at.isoformat(),
        "interrupted": summary.session.interrupted,
    }
