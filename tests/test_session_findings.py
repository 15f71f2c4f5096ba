"""Acceptance for sessions: on the lab, the findings name the code that holds connections.

The lab gateway in ``held`` mode and then in ``fresh`` mode, each under the same
bounded load on loopback while a session records it (``profiler.lab.record``: task
sampler injected, py-spy dumps, RSS, pg_stat_activity with ownership).

The lab runs with a short ``pool_timeout`` (0.1 s): a checkout that finds the
pool empty blocks the event loop (the handlers are ``async def`` over a sync
``Session``), and with 30 s the held lab deadlocks outright (every connection
taken by an authentication session waiting for a second one), which is a
finding too but not this test's. Then
``session show`` must name the held handler and its downstream call, with the
worker PIDs, and ``session compare`` must show the improvement and gate on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from profiler.lab.record import (
    REFERENCE_LAB,
    REFERENCE_USERS,
    record_lab_session,
    reference_options,
    session_settings,
)
from tests.conftest import CliResult

# The reference lab (profiler.lab.record says why: pool 6 + 0, 0.1 s checkout, 2 s downstream)
POOL = REFERENCE_LAB.pool_size + REFERENCE_LAB.max_overflow
USERS, LOAD_SECONDS = REFERENCE_USERS, 10.0


def _record(mode: str, dsn: str, out: Path) -> None:
    """One lab session: the lab up, a session around a bounded load, the lab down."""
    options = reference_options(mode, dsn)  # type: ignore[arg-type]
    out.mkdir()
    settings = session_settings(LOAD_SECONDS, cpu=False, pool_capacity=POOL)
    recorded = record_lab_session(
        options, out, users=USERS, load_seconds=LOAD_SECONDS, settings=settings
    )
    assert recorded.manifest["interrupted"] is False
    assert {p["status"] for p in recorded.manifest["probes"].values()} <= {"ok", "partial"}


@pytest.fixture(scope="module")
def lab_sessions(
    postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("sessions")
    folders = {mode: root / mode for mode in ("held", "fresh")}
    with pytest.MonkeyPatch.context() as patch:  # module scope: before the autouse isolation
        patch.setenv("PROFILER_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        for mode, folder in folders.items():
            _record(mode, postgres_dsn, folder)
    yield folders


@pytest.mark.slow
@pytest.mark.postgres
def test_held_session_names_the_handler_and_its_downstream_call(
    lab_sessions: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    # WHEN the held session is shown
    shown = run_cli("session", "show", str(lab_sessions["held"]), "--json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    manifest = json.loads((lab_sessions["held"] / "manifest.json").read_text())
    workers = {target["pid"] for target in manifest["targets"]}

    # THEN the task sampler explained the holds, and the top finding is the code path:
    # the invoke endpoint, holding its connections across call_tool's downstream call
    assert report["attribution"].startswith("tasks"), report["probes"]
    top = report["findings"][0]
    assert top["rule"] == "held-code-path", report["findings"]
    assert "invoke_tool" in top["title"], top["title"]
    assert "invoke_tool → call_tool → AsyncClient.post" in top["title"], top["title"]
    endpoint = top["evidence"]["endpoints"][0]
    assert endpoint["endpoint"] == "POST /tools/{tool_id}/invoke (invoke_tool)", endpoint
    assert set(endpoint["owner_pids"]) <= workers and endpoint["owner_pids"]
    # AND the connection-hold profile is dominated by it
    assert endpoint["share"] > 0.5, top["evidence"]
    # AND the idle-in-transaction finding names the same workers
    rules = {finding["rule"]: finding for finding in report["findings"]}
    idle = rules["idle-in-transaction"]["evidence"]
    assert {row["owner_pid"] for row in idle["by_owner"]} <= workers
    # AND a worker's event loop was seen asleep in the sync pool's checkout
    blocked = rules["blocked-event-loop"]["evidence"]
    assert blocked["worker_pid"] in workers and blocked["blocked_samples"] >= 2, blocked


@pytest.mark.slow
@pytest.mark.postgres
def test_fresh_session_has_no_held_code_path(
    lab_sessions: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    shown = run_cli("session", "show", str(lab_sessions["fresh"]), "--json")
    assert shown.exit_code == 0, shown.output
    rules = {finding["rule"] for finding in json.loads(shown.stdout)["findings"]}
    assert "held-code-path" not in rules
    assert "idle-in-transaction" not in rules


@pytest.mark.slow
@pytest.mark.postgres
def test_compare_shows_the_fix_and_gates_the_regression(
    lab_sessions: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    held, fresh = str(lab_sessions["held"]), str(lab_sessions["fresh"])
    # WHEN held (before) is compared with fresh (after)
    better = run_cli("session", "compare", held, fresh, "--json", "--fail-on", "any")
    assert better.exit_code == 0, better.output
    changes = {c["measure"]: c for c in json.loads(better.stdout)["changes"]}
    # THEN fewer transactions idle in transaction, for less time, and more throughput
    assert changes["idle_in_transaction"]["verdict"] == "better", changes
    assert changes["idle_age_max"]["verdict"] == "better", changes
    assert changes["throughput_rps"]["verdict"] == "better", changes
    assert changes["throughput_rps"]["after"] > 2 * changes["throughput_rps"]["before"]

    # AND the other way round (the fix reverted) fails the gate with exit 1
    worse = run_cli("session", "compare", fresh, held, "--fail-on", "idle-in-transaction")
    assert worse.exit_code == 1, worse.output
    assert "idle-in-transaction" in worse.stderr
    table = run_cli("session", "compare", held, fresh)
    assert table.exit_code == 0 and "throughput" in table.stdout


@pytest.mark.slow
@pytest.mark.postgres
def test_show_prints_findings_and_the_held_table(
    lab_sessions: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    shown = run_cli("session", "show", str(lab_sessions["held"]))
    assert shown.exit_code == 0, shown.output
    assert "held-code-path" in shown.stdout
    assert "longest transactions" in shown.stdout


@pytest.mark.slow
@pytest.mark.postgres
def test_held_diagnosis_names_the_hold_across_the_call_and_the_two_connections(
    lab_sessions: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    # WHEN the held session is shown
    shown = run_cli("session", "show", str(lab_sessions["held"]), "--json")
    assert shown.exit_code == 0, shown.output
    diagnosis = json.loads(shown.stdout)["diagnosis"]
    # THEN the first cause is the sessions held across the downstream call in invoke_tool,
    # with the handler's file:line
    first = diagnosis[0]
    assert first["cause"] == "session-held-across-await", diagnosis
    assert "invoke_tool" in first["title"] and "held.py:" in first["title"], first["title"]
    handler = next(w for w in first["where"] if w["role"] == "handler")
    assert (handler["function"], handler["file"]) == ("invoke_tool", "profiler/lab/gateway/held.py")
    assert handler["line"] > 0
    assert any(
        w["role"] == "slow call" and "AsyncClient.post" in w["function"] for w in first["where"]
    )
    # AND a cause names the two connections per request, one from the auth dependency
    two = next(c for c in diagnosis if c["cause"] == "two-connections-per-request")
    assert "takes 2 connections" in two["title"], two["title"]
    assert "get_auth_db" in two["title"], two["title"]
    assert {w["function"] for w in two["where"]} >= {"get_auth_db", "get_db"}, two["where"]
    # AND the text prints the Diagnosis before the findings
    text = run_cli("session", "show", str(lab_sessions["held"])).stdout
    assert text.index("Diagnosis") < text.index("held-code-path")
    assert "session-held-across-await" in text.split("\n1. ", 1)[1].splitlines()[0]


@pytest.mark.slow
@pytest.mark.postgres
def test_fresh_diagnosis_finds_no_cause_and_no_critical_finding(
    lab_sessions: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    shown = run_cli("session", "show", str(lab_sessions["fresh"]), "--json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert report["diagnosis"] == []
    assert [f for f in report["findings"] if f["severity"] == "critical"] == []
    text = run_cli("session", "show", str(lab_sessions["fresh"])).stdout
    assert "Diagnosis: no cause found" in text.splitlines()[1], text
