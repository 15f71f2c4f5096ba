"""The lab's command surface: clear one-line errors, never a traceback."""

from __future__ import annotations

import json
import socket

import pytest

from profiler.capture.processes import is_running
from profiler.errors import UsageError
from profiler.lab.load import run_load
from tests.helpers import retry


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_down_with_nothing_running_is_a_clear_error(run_cli) -> None:
    result = run_cli("lab", "down")
    assert result.exit_code == 2, result.output
    assert "no lab is running" in _one_error_line(result.stderr)


def test_status_with_nothing_running(run_cli) -> None:
    result = run_cli("lab", "status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "downstream_pid": None,
        "dsn": None,
        "master_pid": None,
        "mode": None,
        "pool_mode": None,
        "pooler_pid": None,
        "postgres_pid": None,
        "running": False,
        "server": None,
        "url": None,
        "worker_pids": [],
    }


def test_up_on_a_port_in_use_is_a_clear_error(run_cli) -> None:
    # GIVEN something listening on the port
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # WHEN
        result = run_cli("lab", "up", "--port", str(port))
    # THEN nothing was started and the error names the port
    assert result.exit_code == 2, result.output
    assert f"port {port}" in _one_error_line(result.stderr)


def test_up_with_a_bad_mode_is_a_usage_error(run_cli) -> None:
    result = run_cli("lab", "up", "--mode", "sometimes")
    assert result.exit_code == 2, result.output
    assert "--mode" in _one_error_line(result.stderr)


def test_load_refuses_targets_off_loopback(run_cli) -> None:
    result = run_cli("lab", "load", "--url", "http://10.1.2.3:8000", "--seconds", "1")
    assert result.exit_code == 2, result.output
    assert "loopback" in _one_error_line(result.stderr)


def test_load_on_a_gateway_that_accepts_but_never_answers_says_so() -> None:
    # GIVEN a listener that accepts connections and never answers (a wedged worker's socket)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        # WHEN load starts on it
        with pytest.raises(UsageError) as raised:
            run_load(url, users=1, seconds=1, request_timeout=0.5)
    # THEN the error names the silence, not a gateway to start
    assert "accepted GET /tools but did not answer it in 0.5 s (ReadTimeout)" in str(raised.value)
    assert "wedged" in (raised.value.hint or "")


@pytest.mark.slow
def test_up_twice_is_a_clear_error_and_down_stops_everything(run_cli, tmp_path) -> None:
    # GIVEN a running lab
    port = _free_port()
    first = run_cli("lab", "up", "--port", str(port), "--workers", "1")
    assert first.exit_code == 0, first.output
    try:
        status = json.loads(run_cli("lab", "status", "--json").stdout)
        assert status["running"] is True
        assert len(status["worker_pids"]) == 1
        # WHEN started again
        second = run_cli("lab", "up", "--port", str(_free_port()))
        # THEN
        assert second.exit_code == 2, second.output
        assert "already running" in _one_error_line(second.stderr)
    finally:
        stopped = run_cli("lab", "down")
    assert stopped.exit_code == 0, stopped.output
    pids = [status["master_pid"], status["downstream_pid"], status["postgres_pid"]]
    pids += status["worker_pids"]
    # A stopped PostgreSQL may be a zombie until init reaps it: that is stopped.
    retry(lambda: not [pid for pid in pids if is_running(pid)], what="lab processes to exit")
    assert json.loads(run_cli("lab", "status", "--json").stdout)["running"] is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
