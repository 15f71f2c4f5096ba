"""`session compare` on recorded sessions: how a measure that a fix removes altogether compares.

The recorded held and fresh lab sessions (``tests/data``) are real captures; the
"clean" variant is the fresh one with every idle-in-transaction row turned
into a plain idle one, which is what a fresh run that happened never to catch
a transaction between its statements looks like.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis.findings import Finding
from profiler.session import open as open_session
from profiler.session.compare import MEASURES, Measure, compare, verdict
from profiler.session.summary import Summary, summarize

DATA = Path(__file__).parent / "data"
STATE, XACT_START = 15, 10  # columns of an activity row, as the header lists them


def without_idle_transactions(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / "activity.parquet").unlink()
    lines = (target / "activity.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["columns"][STATE] == "state" and header["columns"][XACT_START] == "xact_start"
    rewritten = [lines[0]]
    for line in lines[1:]:
        record = json.loads(line)
        for row in record.get("rows", []):
            if row[STATE] == "idle in transaction":
                row[STATE], row[XACT_START] = "idle", None
        rewritten.append(json.dumps(record))
    (target / "activity.jsonl").write_text("\n".join(rewritten) + "\n")
    return target


def by_name(name: str) -> Measure:
    return next(measure for measure in MEASURES if measure.name == name)


@pytest.fixture(scope="module")
def held() -> Summary:
    return summarize(open_session(DATA / "session"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Summary:
    folder = tmp_path_factory.mktemp("clean") / "session"
    return summarize(open_session(without_idle_transactions(DATA / "session-fresh", folder)))


def test_a_sampled_session_with_no_idle_transaction_has_ages_of_zero(clean: Summary) -> None:
    # GIVEN a session that sampled pg_stat_activity and never saw idle in transaction
    metrics = clean.metrics
    # THEN its idle ages were measured, and are 0 s, not unknown
    assert (metrics.idle_age_p50, metrics.idle_age_p95, metrics.idle_age_max) == (0.0, 0.0, 0.0)
    assert (metrics.idle_in_transaction, metrics.idle_in_transaction_peak) == (0, 0)


def test_a_fix_that_removes_every_idle_transaction_is_better(held: Summary, clean: Summary) -> None:
    # WHEN the held session is compared with one that has no idle transaction left
    changes = {c.measure.name: c for c in compare(held, clean, ["idle-in-transaction"]).changes}
    # THEN every idle measure is better, and the gate passes
    for name in ("idle_in_transaction", "idle_in_transaction_peak", "idle_age_max"):
        assert changes[name].verdict == "better", changes[name]
    assert compare(held, clean, ["idle-in-transaction"]).failed_on == []
    # AND the other way round the gate fails
    assert compare(clean, held, ["idle-in-transaction"]).failed_on == ["idle-in-transaction"]


def test_a_session_without_activity_leaves_the_ages_unknown(tmp_path: Path) -> None:
    # GIVEN a session whose PostgreSQL probe recorded nothing
    folder = shutil.copytree(DATA / "session-fresh", tmp_path / "session")
    (folder / "activity.parquet").unlink()
    (folder / "activity.jsonl").unlink()
    metrics = summarize(open_session(folder)).metrics
    # THEN the ages are unknown, and a comparison on them says so
    assert metrics.idle_age_max is None
    assert verdict(by_name("idle_age_max"), 1.0, metrics.idle_age_max) == "n/a"


# -- findings new in AFTER and resolved ------------------------------------------------------


def _stuck(query: str, severity: str = "warning") -> Finding:
    return Finding("stuck-query", severity, f"`{query}` held", {"query": query}, 12.0)


def _saturated(pid: int, severity: str = "critical") -> Finding:
    return Finding("pool-saturation", severity, f"worker {pid} at cap", {"worker_pid": pid}, 5.0)


def test_the_same_session_twice_has_nothing_new_and_nothing_resolved(held: Summary) -> None:
    comparison = compare(held, held)
    assert comparison.appeared == [] and comparison.resolved == []
    assert comparison.to_json()["findings"]["persisting"] == len(held.findings)


def test_a_finding_of_a_rule_before_already_had_is_new_when_its_subject_is(
    held: Summary,
) -> None:
    # GIVEN before with one stuck query and two workers at their cap
    before = dataclasses.replace(
        held, findings=[_stuck("SELECT 1"), _saturated(10), _saturated(11)]
    )
    # AND after with another stuck query, the same one, and three workers at their cap
    after = dataclasses.replace(
        held,
        findings=[
            _stuck("SELECT 1"),
            _stuck("SELECT 2"),
            _saturated(20),
            _saturated(21),
            _saturated(22),
        ],
    )
    # WHEN compared
    comparison = compare(before, after, ["stuck-query"])
    # THEN the new query and the third worker are new (worker PIDs differ between runs)
    assert [f.title for f in comparison.appeared] == ["`SELECT 2` held", "worker 22 at cap"]
    assert comparison.resolved == []
    assert comparison.failed_on == ["stuck-query"]
    # AND the other way round they are the resolved ones
    back = compare(after, before)
    assert [f.title for f in back.resolved] == ["`SELECT 2` held", "worker 22 at cap"]
    assert back.appeared == []


def test_a_more_severe_counterpart_is_new(held: Summary) -> None:
    before = dataclasses.replace(held, findings=[_stuck("SELECT 1")])
    after = dataclasses.replace(held, findings=[_stuck("SELECT 1", "critical")])
    assert [f.severity for f in compare(before, after).appeared] == ["critical"]
    assert compare(after, before).appeared == []


def test_compare_prints_and_reports_new_and_resolved_findings(run_cli: Any) -> None:
    # WHEN the fresh session is compared with the held one, both ways
    forward = run_cli("session", "compare", str(DATA / "session"), str(DATA / "session-fresh"))
    backward = run_cli(
        "session", "compare", str(DATA / "session-fresh"), str(DATA / "session"), "--json"
    )
    assert forward.exit_code == 0, forward.output
    assert backward.exit_code == 0, backward.output
    # THEN the text says how many were resolved and new, and lists them
    count = len(summarize(open_session(DATA / "session")).findings)
    assert f"findings: {count} resolved, 0 new in after, 0 in both" in forward.stdout
    assert forward.stdout.count("resolved ") == count
    # AND the JSON lists the held session's findings as new in AFTER
    findings = json.loads(backward.stdout)["findings"]
    assert len(findings["appeared"]) == count and findings["resolved"] == []
    assert findings["persisting"] == 0
