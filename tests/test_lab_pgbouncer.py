"""`profiler lab up --via pgbouncer`: the incident's topology, and the profiler sees through it.

Real everything: the lab gateway (gunicorn + uvicorn workers) in held mode, a
real PgBouncer in transaction pooling between it and the test PostgreSQL, a real
`session run` while `lab load` drives a few users. The held transactions must
be owned by the gateway's workers, never by PgBouncer, with connection-seconds
attributed to code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from profiler.capture.processes import is_running
from profiler.errors import ToolMissingError
from profiler.lab import pgbouncer
from profiler.pg.embedded import free_port
from tests.conftest import CliResult
from tests.helpers import retry
from tests.test_pgbouncer import requires_pgbouncer

ROOT = Path(__file__).parent.parent


@requires_pgbouncer
@pytest.mark.slow
@pytest.mark.postgres
def test_lab_through_pgbouncer_transaction_pooling_names_the_workers(
    run_cli: Callable[..., CliResult], postgres_dsn: str, tmp_path: Path
) -> None:
    # GIVEN the lab in held mode behind PgBouncer in transaction pooling
    up = run_cli(
        "lab", "up", "--via", "pgbouncer", "--pool-mode", "transaction", "--mode", "held",
        "--workers", "2", "--pool-size", "3", "--max-overflow", "0",
        "--downstream-latency", "1.5", "--port", str(free_port()), "--dsn", postgres_dsn,
    )  # fmt: skip
    try:
        assert up.exit_code == 0, up.output
        status = json.loads(run_cli("lab", "status", "--json").stdout)
        assert status["pool_mode"] == "transaction" and status["pooler_pid"], status
        pooler, workers = status["pooler_pid"], set(status["worker_pids"])
        out = tmp_path / "session"
        # WHEN a session records while a few users load it
        session = subprocess.Popen(
            [
                sys.executable, "-m", "profiler", "session", "run",
                "--pid", str(status["master_pid"]), "--dsn", status["dsn"],
                "-d", "8", "--no-cpu", "--no-tasks", "--pg-interval", "0.5", "-o", str(out),
            ],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            retry((out / "activity.jsonl").exists, what="the session recording")
            load = run_cli("lab", "load", "--users", "6", "--seconds", "4")
            assert load.exit_code == 0, load.output
            _, stderr = session.communicate(timeout=60)
        finally:
            if session.poll() is None:
                session.kill()
                session.communicate()
        assert session.returncode == 0, stderr
        assert "admin console" not in stderr, stderr  # found without help, as the lab's role
        shown = run_cli("session", "show", str(out), "--json")
    finally:
        down = run_cli("lab", "down")
    assert down.exit_code == 0 and "pgbouncer" in down.stderr, down.output
    # THEN every held transaction is a gateway worker's, via pgbouncer, never PgBouncer's
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    held = report["held_connections"]
    assert held, report
    owners = {h["owner_pid"] for h in held}
    assert pooler not in owners and owners & workers, (owners, workers, pooler)
    # a transaction seen once, as its server was unlinked (PgBouncer's SHOW SERVERS is read a
    # moment after pg_stat_activity), may have no worker: then it is labelled, never a worker
    for row in held:
        if row["owner_pid"] is None:
            assert "pooler" in (row["owner_label"] or ""), row
        else:
            assert row["owner_pid"] in workers and row["via"] == "pgbouncer", row
    assert report["metrics"]["connection_seconds_held"] > 0
    assert f"worker {pooler}" not in shown.stdout
    assert not is_running(pooler)  # lab down stopped PgBouncer by PID


def test_lab_up_refuses_an_unknown_pooler_before_starting_anything(
    run_cli: Callable[..., CliResult],
) -> None:
    # WHEN lab up is given a pooler it does not know, or a pool mode without --via
    unknown = run_cli("lab", "up", "--via", "odyssey", "--port", str(free_port()))
    alone = run_cli("lab", "up", "--pool-mode", "transaction", "--port", str(free_port()))
    # THEN usage errors, and no lab runs
    assert unknown.exit_code == 2 and "--via must be one of pgbouncer" in unknown.stderr
    assert alone.exit_code == 2 and "--pool-mode goes with --via" in alone.stderr
    assert json.loads(run_cli("lab", "status", "--json").stdout)["running"] is False


def test_a_missing_pgbouncer_is_exit_5_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN no pgbouncer on PATH nor where Debian puts it (the one thing a test cannot uninstall)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgbouncer, "DEBIAN_PATH", str(tmp_path / "pgbouncer"))
    # WHEN the lab looks for it
    with pytest.raises(ToolMissingError) as raised:
        pgbouncer.binary()
    # THEN exit 5, and the hint is the install command
    assert raised.value.exit_code == 5
    assert "apt-get install pgbouncer" in (raised.value.hint or "")
