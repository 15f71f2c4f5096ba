"""``lab up --server granian|uvicorn`` and ``--unix-socket``, through the CLI, on real servers;
and a port just released by a loaded lab is free again at once."""

from __future__ import annotations

import json
import os
import signal
import threading

import psutil
import psycopg
import pytest

from profiler.capture.processes import is_running
from profiler.lab.load import run_load
from profiler.pg.embedded import free_port
from profiler.pg.unix_socket import with_socket
from tests.helpers import connections_to, retry


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_an_unknown_server_is_a_usage_error(run_cli) -> None:
    result = run_cli("lab", "up", "--server", "waitress", "--port", str(free_port()))
    assert result.exit_code == 2, result.output
    assert "--server must be one of gunicorn, granian, uvicorn" in _one_error_line(result.stderr)


def test_a_unix_socket_to_another_host_is_a_usage_error(run_cli) -> None:
    result = run_cli(
        *("lab", "up", "--unix-socket", "--port", str(free_port())),
        *("--dsn", "postgresql://app:s3cret@db.example.invalid:5432/app"),
    )
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.stderr)
    assert "--unix-socket needs PostgreSQL on this host" in line
    assert "s3cret" not in result.output


def test_the_socket_dsn_keeps_user_password_and_database() -> None:
    assert (
        with_socket("postgresql://app:pw@localhost:6543/db?application_name=x", "/run/pg", 6543)
        == "postgresql://app:pw@/db?host=/run/pg&port=6543&application_name=x"
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_granian_over_the_unix_socket_and_down_stops_orphaned_workers(run_cli) -> None:
    # GIVEN the lab served by granian, its gateway on the embedded PostgreSQL's socket
    up = run_cli(
        *("lab", "up", "--server", "granian", "--unix-socket", "--workers", "2"),
        *("--port", str(free_port()), "--downstream-latency", "0.2"),
    )
    assert up.exit_code == 0, up.output
    status: dict[str, object] = {}
    try:
        status = json.loads(run_cli("lab", "status", "--json").stdout)
        # THEN status keeps its shape and names the server; the DSN is the socket's
        assert status["running"] is True and status["server"] == "granian"
        assert isinstance(status["dsn"], str) and "host=/" in status["dsn"]
        workers = status["worker_pids"]
        assert isinstance(workers, list) and len(workers) == 2
        # AND under load the workers' PostgreSQL clients are Unix sockets (no client address)
        result = run_load(str(status["url"]), users=4, seconds=1.5)
        assert result.requests > 0 and result.errors == 0, result
        with psycopg.connect(status["dsn"], autocommit=True) as conn:
            rows = conn.execute(
                "SELECT client_addr, client_port FROM pg_stat_activity "
                "WHERE datname = 'lab' AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        assert rows and all(addr is None and port == -1 for addr, port in rows), rows
        # WHEN the master dies, leaving its workers behind, and the lab is stopped
        master = status["master_pid"]
        assert isinstance(master, int)
        os.kill(master, signal.SIGKILL)
        retry(lambda: not is_running(master), what="the master to die")
    finally:
        down = run_cli("lab", "down")
    assert down.exit_code == 0, down.output
    # THEN the recorded workers were stopped by PID too
    pids = [status.get("downstream_pid"), status.get("postgres_pid"), *workers]
    retry(lambda: not [p for p in pids if isinstance(p, int) and is_running(p)], what="lab exit")


@pytest.mark.slow
@pytest.mark.postgres
def test_up_right_after_a_loaded_lab_is_down_reuses_the_port(run_cli, postgres_dsn: str) -> None:
    # GIVEN a lab stopped while it served load: the gateway closed its connections first,
    # so its port holds TIME_WAIT connections
    port = free_port()
    args = ("lab", "up", "--port", str(port), "--workers", "1", "--dsn", postgres_dsn)
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    url = json.loads(run_cli("lab", "status", "--json").stdout)["url"]
    loader = threading.Thread(target=run_load, args=(url,), kwargs={"users": 4, "seconds": 3})
    loader.start()
    try:
        retry(lambda: connections_to(port, psutil.CONN_ESTABLISHED), what="load on the gateway")
    finally:
        assert run_cli("lab", "down").exit_code == 0
        loader.join()
    waiting = connections_to(port, psutil.CONN_TIME_WAIT)
    assert waiting, "no TIME_WAIT connection on the port: the test would prove nothing"
    # WHEN the lab is started again at once on the same port
    second = run_cli(*args)
    try:
        # THEN it starts
        assert second.exit_code == 0, second.output
    finally:
        run_cli("lab", "down")
