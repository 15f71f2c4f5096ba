"""`profiler db` as users run it: a real CLI subprocess against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from profiler.pg import embedded, recording
from profiler.pg.dsn import build
from tests.helpers import lines_of_kind, retry


def _backend_age(dsn: str, pid: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT extract(epoch FROM clock_timestamp() - state_change)::float8 "
            "FROM pg_stat_activity WHERE pid = %s",
            (pid,),
        ).fetchone()[0]


@pytest.mark.postgres
def test_check_exits_1_and_names_the_holder_when_a_transaction_is_held_too_long(
    run_cli, postgres_dsn, open_sessions
):
    # GIVEN a backend of this process idle in transaction for more than 1 s
    (held,) = open_sessions(1)
    retry(lambda: _backend_age(postgres_dsn, held.backend_pid) > 1.2, what="1.2 s of idleness")
    # WHEN
    result = run_cli("db", "check", "--dsn", postgres_dsn, "--max-idle-in-tx-age", "1", "--json")
    # THEN
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["limits"] == {"max_idle_in_tx_age": 1.0, "max_idle_in_tx": None}
    (mine,) = [v for v in report["violations"] if v["pid"] == held.backend_pid]
    assert mine["state"] == "idle in transaction"
    assert mine["age_seconds"] > 1.0
    assert mine["owner"]["pid"] == os.getpid()
    assert "violation" in result.stderr


@pytest.mark.postgres
def test_check_exits_0_when_nothing_is_held(run_cli, postgres_dsn):
    result = run_cli(
        "db",
        "check",
        "--dsn",
        postgres_dsn,
        "--max-idle-in-tx-age",
        "30",
        "--for",
        "0.5",
        "-i",
        "0.1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["violations"] == []
    assert report["snapshots"] >= 4


@pytest.mark.postgres
def test_snapshot_json_has_the_documented_shape(run_cli, postgres_dsn, open_sessions):
    (held,) = open_sessions(1)
    result = run_cli("db", "snapshot", "--dsn", postgres_dsn, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"taken_at", "server_version", "backends", "summary"} <= data.keys()
    (mine,) = [b for b in data["backends"] if b["pid"] == held.backend_pid]
    documented = {
        "pid",
        "state",
        "xact_start",
        "state_change",
        "query_start",
        "wait_event_type",
        "wait_event",
        "application_name",
        "client_addr",
        "client_port",
        "query",
        "owner",
    }
    assert documented <= mine.keys()
    assert mine["owner"]["pid"] == os.getpid() and "pytest" in mine["owner"]["cmdline"]
    assert data["summary"]["by_state"]["idle in transaction"]["count"] >= 1
    assert data["summary"]["oldest_idle_in_tx_seconds"] >= 0


@pytest.mark.postgres
@pytest.mark.parametrize("columns", ["80", "40"])
def test_snapshot_table_piped_keeps_pids_and_ports_whole(
    run_cli, postgres_dsn, open_sessions, columns
):
    # GIVEN a session held idle in transaction by this process
    (held,) = open_sessions(1)
    # WHEN the table is printed through a pipe, as `| less` or `> file` (COLUMNS set or not,
    # piped output is not fitted to a width)
    result = run_cli("db", "snapshot", "--dsn", postgres_dsn, env={"COLUMNS": columns})
    # THEN the backend's row holds its PID, its owner's PID and its client addr:port whole
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if f" {held.backend_pid} " in line]
    assert len(rows) == 1, result.stdout
    words = rows[0].replace("│", " ").split()
    assert str(held.backend_pid) in words and str(os.getpid()) in words, rows[0]
    data = json.loads(run_cli("db", "snapshot", "--dsn", postgres_dsn, "--json").stdout)
    (mine,) = [b for b in data["backends"] if b["pid"] == held.backend_pid]
    assert f"{mine['client_addr'] or 'local'}:{mine['client_port']}" in words, rows[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["db", "snapshot", "--dsn", "mysql://x@h/x"], 2, "not a PostgreSQL DSN"),
        (["db", "snapshot", "--dsn", "not a dsn password=Zq9secret"], 2, "invalid DSN"),
        (["db", "snapshot", "--dsn", "postgresql://x@127.0.0.1:{closed}/x"], 4, "unreachable"),
        (
            ["db", "watch", "--dsn", "postgresql://x@127.0.0.1:{closed}/x", "-i", "0"],
            2,
            "at least 0.1",
        ),
        (
            ["db", "check", "--dsn", "postgresql://x@127.0.0.1:{closed}/x", "-i", "-1"],
            2,
            "at least 0.1",
        ),
        (["db", "snapshot"], 2, "no PostgreSQL DSN"),
    ],
)
def test_bad_input_is_one_line_and_a_distinct_code(run_cli, args, code, says):
    closed = str(embedded.free_port())
    result = run_cli(
        *[a.replace("{closed}", closed) for a in args], env={"PROFILER_DSN": "", "DATABASE_URL": ""}
    )
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "Zq9secret" not in result.stderr


@pytest.mark.postgres
def test_a_non_postgres_port_is_unreachable_not_a_crash(run_cli):
    # GIVEN an HTTP-ish listener that is not PostgreSQL
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_cli(
            "db", "snapshot", "--dsn", f"postgresql://x@127.0.0.1:{port}/x?connect_timeout=2"
        )
    assert result.exit_code == 4, result.output


@pytest.mark.postgres
def test_watch_refuses_an_unwritable_output_and_leaves_no_file(run_cli, postgres_dsn, tmp_path):
    target = tmp_path / "missing-dir" / "activity.jsonl"
    result = run_cli("db", "watch", "--dsn", postgres_dsn, "-d", "1", "-o", str(target))
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.stderr
    assert not target.exists()


@pytest.mark.postgres
def test_watch_never_overwrites_without_force(run_cli, postgres_dsn, tmp_path):
    target = tmp_path / "activity.jsonl"
    target.write_text("precious\n")
    result = run_cli("db", "watch", "--dsn", postgres_dsn, "-d", "1", "-o", str(target))
    assert result.exit_code == 2, result.output
    assert target.read_text() == "precious\n"


def _start_watch(dsn: str, output: Path, *, interval: str, duration: str) -> subprocess.Popen[str]:
    """``profiler db watch`` recording to ``output``, as a real process we can signal."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "profiler",
            "db",
            "watch",
            "--dsn",
            dsn,
            "-i",
            interval,
            "-d",
            duration,
            "-o",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_snapshots(output: Path, count: int) -> None:
    retry(
        lambda: lines_of_kind(output, "snapshot") >= count,
        timeout=20,
        what=f"{count} recorded snapshots",
    )


@pytest.mark.slow
def test_watch_records_a_server_restart_as_a_gap_and_keeps_sampling(tmp_path: Path):
    # GIVEN a server of our own, and a watch recording it
    server = embedded.start()  # under /tmp: the server's system user must reach it
    dsn = build(host=embedded.HOST, port=server.port, user=embedded.SUPERUSER, dbname="postgres")
    output = tmp_path / "activity.jsonl"
    watch = _start_watch(dsn, output, interval="0.2", duration="8")
    try:
        _wait_for_snapshots(output, 5)
        # WHEN the server restarts under it
        embedded.stop(server.pgdata, pid=server.pid, remove=False)
        time.sleep(1.0)
        server = embedded.start(server.pgdata, port=server.port)
        _, stderr = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        embedded.stop(server.pgdata, pid=server.pid)
    # THEN it finished normally, with samples before and after and the gap marked
    assert watch.returncode == 0, stderr
    recorded = recording.read(output)
    assert len(recorded.gaps) == 1, stderr
    gap = recorded.gaps[0]
    before = [s for s in recorded.snapshots if s.taken_at <= gap.started_at]
    after = [s for s in recorded.snapshots if s.taken_at >= gap.ended_at]
    assert len(before) >= 5 and len(after) >= 3
    assert len(before) + len(after) == len(recorded.snapshots)
    assert (gap.ended_at - gap.started_at).total_seconds() >= 0.9


@pytest.mark.postgres
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_watch_stopped_early_keeps_every_sample_and_exits_6(postgres_dsn, tmp_path, signal_name):
    import signal

    # GIVEN a watch recording for longer than we will let it run
    output = tmp_path / "activity.jsonl"
    watch = _start_watch(postgres_dsn, output, interval="0.1", duration="60")
    try:
        _wait_for_snapshots(output, 3)
        # WHEN it is interrupted
        watch.send_signal(getattr(signal, signal_name))
        _, stderr = watch.communicate(timeout=20)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    # THEN exit 6, one error line, and a complete, readable recording
    assert watch.returncode == 6, stderr
    assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 1
    recorded = recording.read(output)
    assert not recorded.torn_tail
    assert len(recorded.snapshots) >= 3
    assert output.read_text().count('"kind":"snapshot"') == len(recorded.snapshots)


@pytest.mark.slow
def test_a_wrong_password_is_exit_4_and_never_printed(run_cli):
    # GIVEN a server that checks passwords on TCP, and a role with one
    server = embedded.start()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute("CREATE ROLE app LOGIN PASSWORD 'right-one'")
            hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
            hba.write_text(
                "local all all trust\n"
                "host all postgres 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )
            admin.execute("SELECT pg_reload_conf()")
        wrong = build(
            host=embedded.HOST,
            port=server.port,
            user="app",
            dbname="postgres",
            password="Wr0ng-Secret",
        )
        right = build(
            host=embedded.HOST,
            port=server.port,
            user="app",
            dbname="postgres",
            password="right-one",
        )
        retry(
            lambda: run_cli("db", "snapshot", "--dsn", right).exit_code == 0,
            what="the reloaded pg_hba.conf",
        )
        # WHEN
        result = run_cli("db", "snapshot", "--dsn", wrong)
        # THEN
        assert result.exit_code == 4, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "refused the login" in errors[0], result.stderr
        assert "Wr0ng-Secret" not in result.output
    finally:
        embedded.stop(server.pgdata, pid=server.pid)
