from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from profiler.capture.debugger_probe import probe_call
from profiler.capture.tools import find_debugger
from profiler.pg.dsn import build
from profiler.pg.embedded import free_port


@pytest.mark.slow
def test_doctor_reports_everything_ok_on_this_machine(run_cli, postgres_dsn: str) -> None:
    # WHEN
    result = run_cli("doctor", "--dsn", postgres_dsn, "--json")
    # THEN every check passes: py-spy dumped a process we started, PostgreSQL answered
    assert result.exit_code == 0, result.output
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert {name: c["status"] for name, c in checks.items()} == {
        "py-spy": "ok",
        "memray": "ok",
        "debugger": "ok",
        "ptrace": "ok",
        "postgresql": "ok",
        "pg_monitor": "ok",
    }
    assert "dumped a Python" in checks["py-spy"]["detail"]


def test_doctor_exits_4_when_postgres_is_unreachable(run_cli) -> None:
    # GIVEN a DSN with a password, to a port nothing listens on
    closed = build(
        host="127.0.0.1", port=free_port(), user="app", dbname="app", password="hunter22"
    )
    # WHEN
    result = run_cli("doctor", "--dsn", closed)
    # THEN
    assert result.exit_code == 4, result.output
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.output
    assert "hunter22" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr


def test_doctor_takes_the_dsn_from_database_url(run_cli) -> None:
    closed = f"postgresql+asyncpg://app@127.0.0.1:{free_port()}/app"
    result = run_cli("doctor", env={"DATABASE_URL": closed, "PROFILER_DSN": ""})
    assert result.exit_code == 4, result.output


@pytest.mark.postgres
def test_doctor_warns_when_the_role_cannot_see_other_sessions(run_cli, postgres_dsn: str) -> None:
    # GIVEN a login role without pg_monitor
    role = f"doctor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        role_dsn = psycopg.conninfo.make_conninfo(postgres_dsn, user=role)
        # WHEN
        result = run_cli("doctor", "--dsn", role_dsn, "--json")
        # THEN it is a warning naming the fix, not a failure
        assert result.exit_code == 0, result.output
        checks = {check["name"]: check for check in json.loads(result.stdout)}
        assert checks["pg_monitor"]["status"] == "warn"
        assert checks["pg_monitor"]["fix"] == f"GRANT pg_monitor TO {role};"
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')


def test_doctor_exits_5_when_py_spy_is_missing(run_cli, tmp_path) -> None:
    result = run_cli("doctor", env={"PROFILER_PYSPY": str(tmp_path / "no-py-spy")})
    assert result.exit_code == 5, result.output
    assert f"py-spy not found at {tmp_path / 'no-py-spy'}" in result.stderr


def _has_amx() -> bool:
    return " amx_tile" in Path("/proc/cpuinfo").read_text()


def _gdb_major(gdb: str) -> int:
    first = subprocess.run([gdb, "--version"], capture_output=True, text=True, check=True)
    return int(re.search(r"(\d+)\.\d+", first.stdout.splitlines()[0]).group(1))  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_debugger_profiler_finds_can_call_functions_here() -> None:
    # GIVEN the debugger profiler would hand to memray (the bundled gdb, when installed)
    found = find_debugger()
    assert found is not None
    # WHEN it makes a throwaway child call getpid()
    probe = probe_call(found)
    # THEN the call works: memray's attach and the task sampler can inject
    assert probe.ok, probe.detail


@pytest.mark.slow
def test_a_gdb_that_cannot_call_on_this_cpu_is_diagnosed(run_cli) -> None:
    # GIVEN the system's gdb, which on an AMX CPU fails before version 14 (Debian 12: 13.1)
    system_gdb = shutil.which("gdb", path="/usr/bin")
    if system_gdb is None:
        pytest.skip("no /usr/bin/gdb to compare with")
    broken = _has_amx() and _gdb_major(system_gdb) < 14
    # WHEN doctor is pointed at it
    result = run_cli("doctor", "--json", env={"PROFILER_GDB": system_gdb})
    debugger = next(c for c in json.loads(result.stdout) if c["name"] == "debugger")
    # THEN it says exactly what the real inferior call said
    if broken:
        assert debugger["status"] == "fail", debugger
        assert "AMX" in debugger["detail"] and "PROFILER_GDB" in debugger["fix"]
        assert result.exit_code == 5
    else:
        assert debugger["status"] == "ok", debugger
