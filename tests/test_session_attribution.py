"""Attribution on the recorded lab sessions: the task that held a connection, or a label.

``tests/data/session`` (held: sessions kept across the downstream call) and
``tests/data/session-fresh`` (the fix) are real captures with the task sampler.
In the fresh one no task was ever seen holding a backend (its transactions last
milliseconds): whatever it attributes is the worker fallback, and must say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis.code_paths import FALLBACK_LABEL
from profiler.session import open as open_session
from profiler.session.summary import Summary, summarize

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def held() -> Summary:
    return summarize(open_session(DATA / "session"))


@pytest.fixture(scope="module")
def fresh() -> Summary:
    return summarize(open_session(DATA / "session-fresh"))


def test_the_fixed_session_attributes_nothing_to_invoke_tool_but_by_the_labelled_fallback(
    fresh: Summary,
) -> None:
    report = fresh.to_json()
    # THEN all its held time came from the worker fallback, and says so
    assert report["attributed_seconds"].keys() == {"worker-fallback"}
    for path in fresh.metrics.top_paths:
        assert path.path.startswith(FALLBACK_LABEL), path.path
    assert all(
        row["attribution"] in ("worker-fallback", None) for row in report["held_connections"]
    )
    # AND no finding blames a path
    assert [f.rule for f in fresh.findings if f.severity == "critical"] == []


def test_a_transaction_seen_once_is_held_for_its_age_not_a_snapshot_interval(
    fresh: Summary,
) -> None:
    # GIVEN the fresh session's three transactions, each seen in one snapshot 0.02-0.11 s
    # after it began (the snapshots are a second apart)
    rows = fresh.to_json()["held_connections"]
    assert len(rows) == 3
    # THEN each held what was seen, never the second to the next snapshot
    assert max(row["duration"] for row in rows) < 0.2
    assert all(row["duration"] <= row["duration_max"] for row in rows)
    assert fresh.metrics.connection_seconds_held == pytest.approx(
        sum(row["duration"] for row in rows), abs=0.01
    )
    assert fresh.metrics.connection_seconds_held < 0.2  # was 3.5 s


def test_the_held_session_names_the_holding_endpoint_from_the_tasks_that_held(
    held: Summary,
) -> None:
    finding = next(f for f in held.findings if f.rule == "held-code-path")
    evidence = finding.evidence
    # THEN the endpoint's share is of the time attributed to the holding tasks
    assert finding.severity == "critical"
    assert evidence["share_of"] == "attributed"
    endpoint = evidence["endpoints"][0]
    assert endpoint["endpoint"] == "POST /tools/{tool_id}/invoke (invoke_tool)"
    assert endpoint["share"] > 0.5
    assert "invoke_tool → call_tool → AsyncClient.post" in finding.title
    assert "more by the worker fallback" in finding.title
    # AND each listed path says how it was attributed
    assert {path["attribution"] for path in evidence["paths"]} == {"task"}
    assert evidence["attributed_seconds"]["task"] > 0


def test_the_held_report_shows_each_transactions_holder_task(tmp_path: Path, run_cli: Any) -> None:
    # WHEN the held session's report is written
    result = run_cli("report", str(DATA / "session"), "-o", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.md").read_text()
    # THEN it says how much each way attributed, and per transaction whose stacks they are
    assert "to the task that held the connection (the task ↔ backend join)" in page
    assert "by the worker fallback" in page
    # (each transaction's "held by": the holding task's path, or a path labelled as the
    # fallback; never the thread dumps of a task-sampled worker)
    held_by = [line for line in page.splitlines() if "POST /tools/{tool_id}/invoke (" in line]
    assert any("(worker fallback)" not in line for line in held_by), held_by
    assert any("(worker fallback)" in line for line in held_by), held_by
    assert "(thread dumps)" not in page


def test_show_json_carries_the_attribution_per_transaction(run_cli: Any) -> None:
    shown = run_cli("session", "show", str(DATA / "session"), "--json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    kinds = {row["attribution"] for row in report["held_connections"]}
    assert kinds <= {"task", "worker-fallback", None} and "task" in kinds
