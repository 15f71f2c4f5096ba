"""Seeing through a real PgBouncer to the process holding each backend (issue 15, item 2).

A real PgBouncer (Debian's package) is started per test on a free loopback port
in front of the test PostgreSQL; transactions are held through it by this
process's threads and by real subprocesses. Where pgbouncer is not installed
the tests skip, saying how to install it (scripts/test installs it under CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from profiler.lab import pgbouncer as lab_pgbouncer
from profiler.model import Owner
from profiler.pg.sampler import ActivitySampler
from profiler.targets.pgbouncer_config import read_console
from tests.conftest import CliResult
from tests.helpers import retry

pytestmark = pytest.mark.postgres

HOLDER = """
import time, psycopg
conn = psycopg.connect(DSN, application_name="pgbouncer-test-holder", prepare_threshold=None)
conn.execute("SELECT 1")  # opens the transaction, left open
print("ready", flush=True)
time.sleep(600)
"""


def _installed() -> bool:
    try:
        lab_pgbouncer.binary()
    except Exception:
        return False
    return True


requires_pgbouncer = pytest.mark.skipif(
    not _installed(), reason="pgbouncer is not installed: apt-get install pgbouncer"
)

StartPooler = Callable[..., lab_pgbouncer.RunningPooler]


@pytest.fixture
def start_pooler(postgres_dsn: str, tmp_path: Path) -> Iterator[StartPooler]:
    """Start real PgBouncers in front of the test server; each stopped by PID at the end."""
    started: list[int] = []

    def start(
        pool_mode: lab_pgbouncer.PoolMode = "session",
        *,
        upstream: str | None = None,
        auth_type: str = "trust",
        unix_socket_dir: Path | None = None,
    ) -> lab_pgbouncer.RunningPooler:
        directory = tmp_path / f"pgbouncer-{len(started)}"
        pooler = lab_pgbouncer.start(
            upstream or postgres_dsn,
            directory,
            pool_mode=pool_mode,
            pool_size=10,
            auth_type=auth_type,
            unix_socket_dir=unix_socket_dir,
        )
        started.append(pooler.pid)
        return pooler

    yield start
    for pid in started:
        lab_pgbouncer.stop(pid)


@pytest.fixture
def hold_through() -> Iterator[Callable[[str], int]]:
    """Hold a transaction open through a DSN in a thread of this process; its backend pid."""
    release = threading.Event()
    conns: list[psycopg.Connection[tuple[object, ...]]] = []
    threads: list[threading.Thread] = []

    def hold(dsn: str) -> int:
        conn = psycopg.connect(dsn, application_name="pgbouncer-test", prepare_threshold=None)
        conns.append(conn)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()  # the transaction stays open
        assert row is not None
        thread = threading.Thread(target=release.wait, args=(60,), daemon=True)
        thread.start()
        threads.append(thread)
        return int(str(row[0]))

    yield hold
    release.set()
    for conn in conns:
        conn.close()
    for thread in threads:
        thread.join(10)


def _owners(postgres_dsn: str, pgbouncer: str | None = None) -> tuple[dict[int, Owner], list[str]]:
    warnings: list[str] = []
    with ActivitySampler(postgres_dsn, warn=warnings.append, pgbouncer=pgbouncer) as sampler:
        owners = dict(sampler.snapshot().owners)
    return owners, warnings


@requires_pgbouncer
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
@pytest.mark.parametrize("console", ["explicit", "discovered"])
def test_a_transaction_held_through_pgbouncer_is_owned_by_this_process(
    start_pooler: StartPooler,
    hold_through: Callable[[str], int],
    postgres_dsn: str,
    pool_mode: lab_pgbouncer.PoolMode,
    console: str,
) -> None:
    # GIVEN a thread of ours holding a transaction open through PgBouncer
    pooler = start_pooler(pool_mode)
    backend = hold_through(lab_pgbouncer.through(postgres_dsn, pooler.port))
    # WHEN the sampler reads PostgreSQL, given the console or finding it from the config
    owners, warnings = _owners(postgres_dsn, pooler.admin_dsn if console == "explicit" else None)
    # THEN the backend is ours, via pgbouncer; PgBouncer is not its owner
    owner = owners[backend]
    assert (owner.kind, owner.pid, owner.via) == ("process", os.getpid(), "pgbouncer"), owner
    assert f"through pgbouncer {pooler.pid}" in owner.detail
    assert (owner.to_json() or {}).get("via") == "pgbouncer"
    assert warnings == []


@requires_pgbouncer
@pytest.mark.slow
def test_two_clients_through_one_pooler_have_two_owners(
    start_pooler: StartPooler,
    hold_through: Callable[[str], int],
    python_process: Callable[[str], subprocess.Popen[str]],
    postgres_dsn: str,
) -> None:
    # GIVEN a transaction held by us and one by another process, both through PgBouncer
    pooler = start_pooler("transaction")
    through = lab_pgbouncer.through(postgres_dsn, pooler.port)
    ours = hold_through(through)
    other = python_process(HOLDER.replace("DSN", repr(through)))
    # WHEN the sampler reads PostgreSQL
    owners = retry(lambda: _pair(postgres_dsn, pooler.admin_dsn), what="both holders seen through")
    # THEN each backend is owned by the process that holds its client connection
    assert owners[ours].pid == os.getpid()
    others = [o for pid, o in owners.items() if pid != ours]
    assert [(o.pid, o.via) for o in others] == [(other.pid, "pgbouncer")]


def _pair(postgres_dsn: str, admin: str) -> dict[int, Owner] | None:
    owners, _ = _owners(postgres_dsn, admin)
    behind = {pid: o for pid, o in owners.items() if o.via == "pgbouncer"}
    return behind if len(behind) == 2 else None


@requires_pgbouncer
def test_an_idle_server_connection_has_no_worker_and_says_why(
    start_pooler: StartPooler, postgres_dsn: str
) -> None:
    # GIVEN a transaction-pooled server connection whose client finished its transaction
    pooler = start_pooler("transaction")
    with psycopg.connect(
        lab_pgbouncer.through(postgres_dsn, pooler.port), autocommit=True, prepare_threshold=None
    ) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(str(row[0]))
        # WHEN the sampler reads PostgreSQL while the client is still connected
        owners, warnings = _owners(postgres_dsn, pooler.admin_dsn)
    # THEN the backend belongs to the pooler, with the reason, and no worker is named
    owner = owners[backend]
    assert owner.kind == "pooler" and owner.pid == pooler.pid, owner
    assert owner.detail == "pgbouncer: pooled, no client now"
    assert owner.describe() == f"pgbouncer {pooler.pid} (pooler)"
    assert warnings == []


@requires_pgbouncer
def test_an_unreachable_console_warns_once_and_keeps_the_pooler(
    start_pooler: StartPooler, hold_through: Callable[[str], int], postgres_dsn: str
) -> None:
    # GIVEN a transaction held through PgBouncer, and a console DSN where nothing listens
    pooler = start_pooler("session")
    backend = hold_through(lab_pgbouncer.through(postgres_dsn, pooler.port))
    nowhere = f"postgresql://postgres@127.0.0.1:{_closed_port()}/pgbouncer"
    # WHEN two snapshots are taken
    warnings: list[str] = []
    with ActivitySampler(postgres_dsn, warn=warnings.append, pgbouncer=nowhere) as sampler:
        owners = [sampler.snapshot().owners for _ in range(2)]
    # THEN one warning says what to pass; the owner stays the pooler, never a worker
    assert len(warnings) == 1, warnings
    assert "--pgbouncer" in warnings[0] and "admin_users" in warnings[0]
    for taken in owners:
        assert taken[backend].kind == "pooler" and taken[backend].pid == pooler.pid


@requires_pgbouncer
def test_a_wrong_console_password_warns_and_keeps_the_pooler(
    start_pooler: StartPooler, hold_through: Callable[[str], int], postgres_dsn: str
) -> None:
    # GIVEN a PgBouncer with password authentication, and the wrong password for its console
    upstream = postgres_dsn.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    pooler = start_pooler("session", upstream=upstream, auth_type="md5")
    backend = hold_through(lab_pgbouncer.through(upstream, pooler.port))
    wrong = f"postgresql://postgres:wrong@127.0.0.1:{pooler.port}/pgbouncer"
    # WHEN the sampler reads PostgreSQL
    owners, warnings = _owners(postgres_dsn, wrong)
    # THEN a warning, without the password, and the pooler keeps the backend
    assert len(warnings) == 1 and "wrong" not in warnings[0], warnings
    assert owners[backend].kind == "pooler"


@requires_pgbouncer
def test_a_role_missing_from_admin_and_stats_users_is_told_what_to_pass(
    start_pooler: StartPooler, hold_through: Callable[[str], int], postgres_dsn: str
) -> None:
    # GIVEN a transaction through PgBouncer, and a --dsn role PgBouncer does not let read it
    pooler = start_pooler("session")
    backend = hold_through(lab_pgbouncer.through(postgres_dsn, pooler.port))
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pgb_monitor")
        conn.execute("CREATE ROLE pgb_monitor LOGIN IN ROLE pg_monitor")
    try:
        as_monitor = postgres_dsn.replace("postgresql://postgres@", "postgresql://pgb_monitor@")
        # WHEN the console is looked for from the running PgBouncer's config file
        owners, warnings = _owners(as_monitor)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute("DROP ROLE pgb_monitor")
    # THEN one warning names the role and the fix; the pooler keeps the backend
    assert len(warnings) == 1, warnings
    assert "'pgb_monitor'" in warnings[0] and "stats_users" in warnings[0]
    assert owners[backend].kind == "pooler" and owners[backend].pid == pooler.pid


@requires_pgbouncer
def test_the_console_is_found_from_the_running_process_config(
    start_pooler: StartPooler,
) -> None:
    # GIVEN a running PgBouncer started with -u (as root) and a config path
    pooler = start_pooler("transaction")
    # WHEN its console address is read from /proc/PID/cmdline and the config file
    address = read_console(pooler.pid)
    # THEN it is where PgBouncer listens, with the roles that may read it
    assert (address.host, address.port) == ("127.0.0.1", pooler.port)
    assert address.config == pooler.config
    assert address.allows(pooler.role) and not address.allows("somebody-else")


@pytest.mark.parametrize("command", [["db", "snapshot"], ["db", "check"], ["session", "run"]])
def test_an_unparseable_pgbouncer_value_is_a_usage_error(
    run_cli: Callable[..., CliResult], postgres_dsn: str, tmp_path: Path, command: list[str]
) -> None:
    # GIVEN a --pgbouncer value that is no DSN
    extra = ["-o", str(tmp_path / "s"), "-d", "1", "--pid", str(os.getpid())]
    # WHEN a command that reads PostgreSQL gets it
    result = run_cli(
        *command,
        "--dsn",
        postgres_dsn,
        "--pgbouncer",
        "not a dsn",
        *(extra if command[0] == "session" else []),
    )
    # THEN exit 2, one line saying what is wrong and what to pass
    assert result.exit_code == 2, result.output
    assert "invalid --pgbouncer value" in result.stderr
    assert "Traceback" not in result.stderr


@requires_pgbouncer
@pytest.mark.slow
def test_session_run_with_an_unreachable_console_exits_0_and_names_the_pooler(
    run_cli: Callable[..., CliResult],
    python_process: Callable[[str], subprocess.Popen[str]],
    start_pooler: StartPooler,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    # GIVEN a worker holding a transaction through PgBouncer, and an unreachable console
    pooler = start_pooler("session")
    worker = python_process(
        HOLDER.replace("DSN", repr(lab_pgbouncer.through(postgres_dsn, pooler.port)))
    )
    nowhere = f"postgresql://postgres@127.0.0.1:{_closed_port()}/pgbouncer"
    out = tmp_path / "session"
    # WHEN a short session runs
    result = run_cli(
        "session",
        "run",
        "--pid",
        str(worker.pid),
        "--dsn",
        postgres_dsn,
        "--pgbouncer",
        nowhere,
        "-d",
        "3",
        "--no-cpu",
        "--no-tasks",
        "-o",
        str(out),
    )
    # THEN exit 0 with one warning, and the held transaction is the pooler's, not a worker's
    assert result.exit_code == 0, result.output
    assert result.stderr.count("admin console unreachable") == 1, result.output
    shown = run_cli("session", "show", str(out), "--json")
    assert shown.exit_code == 0, shown.output
    held = json.loads(shown.stdout)["held_connections"]
    mine = [h for h in held if h["owner_label"] == f"pgbouncer {pooler.pid} (pooler)"]
    assert mine and all(h["owner_pid"] is None and h["via"] is None for h in mine), held
    assert f"worker {pooler.pid}" not in shown.stdout


def _closed_port() -> int:
    from profiler.pg.embedded import free_port

    return free_port()


@requires_pgbouncer
def test_the_console_is_reached_through_its_unix_socket_under_proc_pid_root(
    start_pooler: StartPooler,
    hold_through: Callable[[str], int],
    postgres_dsn: str,
) -> None:
    # GIVEN a PgBouncer that also listens on a Unix socket, as a containerised one would
    sockets = Path(tempfile.mkdtemp(prefix="profiler-pgbouncer-test-"))
    try:
        sockets.chmod(0o777)  # PgBouncer may run as another user (-u nobody as root)
        pooler = start_pooler("transaction", unix_socket_dir=sockets)
        backend = hold_through(lab_pgbouncer.through(postgres_dsn, pooler.port))
        # WHEN its console is found from its config, and the sampler uses it
        address = read_console(pooler.pid)
        owners, warnings = _owners(postgres_dsn)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    # THEN the socket is preferred, seen through the process's own root, and it works
    assert address.host == f"/proc/{pooler.pid}/root{sockets}"
    assert (owners[backend].pid, owners[backend].via) == (os.getpid(), "pgbouncer")
    assert warnings == []
