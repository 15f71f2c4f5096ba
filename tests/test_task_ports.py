"""Tasks joined to transactions by their client socket's port, as through PgBouncer.

Behind PgBouncer the backend PID a client sees is PgBouncer's cancel key, so a
task never names a PostgreSQL backend by PID there. It names the local port of
its connection's socket, and the transaction's owner carries the same port
(``owner_port``, from PgBouncer's ``SHOW CLIENTS``). Hand-built episodes and task
rounds, and the sampler's walk over real connections, here; the real pooler and
worker are in ``test_task_ports_pgbouncer.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from profiler.analysis import episodes as ep
from profiler.analysis import hold_stacks
from profiler.analysis.attribution import attribute_tasks
from profiler.capture import task_payload
from profiler.model import Owner, Snapshot
from profiler.pg.recording import RecordingWriter
from profiler.session import activity_table
from tests.helpers import client_backend

IDLE_TX = "idle in transaction"
CANCEL_KEY = -1_234_567  # what the driver reports behind PgBouncer: not a backend
T0 = 1_750_000_000.0


def row(taken_at: float, pid: int, *, xact: float | None, owner: int, port: int) -> dict[str, Any]:
    """An activity row of a backend owned, through PgBouncer, by (owner, port)."""
    return {
        "taken_at": taken_at,
        "clock_offset": 0.0,
        "sampled_at": taken_at,
        "pid": pid,
        "backend_start": 1.0,
        "xact_start": xact,
        "state_change": None if xact is None else xact + 0.1,
        "state": "idle" if xact is None else IDLE_TX,
        "query": "SELECT 1",
        "application_name": "gateway",
        "backend_type": "client backend",
        "owner_pid": owner,
        "owner_kind": "process",
        "owner_cmdline": f"granian worker {owner}",
        "owner_via": "pgbouncer",
        "owner_port": port,
    }


def activity(*rows: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    for column in ("owner_pid", "owner_port"):
        frame[column] = frame[column].astype("Int64")
    for column in ("xact_start", "state_change"):
        frame[column] = frame[column].astype("float64")
    return frame


def rounds(*rows: tuple[float, int, int, str, tuple[int, ...], tuple[int, ...]]) -> pd.DataFrame:
    """Task samples ``(taken_at, worker_pid, task_id, stack, backends, ports)``, requests."""
    return pd.DataFrame(
        {
            "taken_at": pd.to_datetime([r[0] for r in rows], unit="s", utc=True),
            "worker_pid": [r[1] for r in rows],
            "task_id": [r[2] for r in rows],
            "stack": [r[3] for r in rows],
            "backends": [r[4] for r in rows],
            "ports": [r[5] for r in rows],
            "endpoint": "endpoint POST /tools/{tool_id}/invoke (invoke_tool)",
        }
    )


def test_a_task_naming_the_owners_port_is_the_holder_through_pgbouncer() -> None:
    # GIVEN backend 7 idle in transaction from 10 to 12, owned through PgBouncer by worker
    # 2001's socket of port 40001; in its rounds, task 1 names that port (and a cancel key
    # as its "backend"), task 2 another port
    held = ep.held_episodes(
        activity(
            row(11, 7, xact=10.0, owner=2001, port=40001),
            row(12, 7, xact=10.0, owner=2001, port=40001),
            row(13, 7, xact=None, owner=2001, port=40001),
        ),
        session_end=20.0,
    )
    assert held["owner_port"].tolist() == [40001]
    samples = rounds(
        (10.5, 2001, 1, "invoke_tool;call_tool;post", (), (40001,)),
        (10.5, 2001, 2, "list_tools;page", (), (40002,)),
        (11.5, 2001, 1, "invoke_tool;call_tool;post", (), (40001,)),
        (11.5, 2001, 2, "list_tools;page", (), (40002,)),
    )
    samples.loc[0, "backends"] = (CANCEL_KEY,)  # type: ignore[call-overload]
    # WHEN held time is attributed
    found = attribute_tasks(held, samples, interval=0.5)
    # THEN it goes to task 1 alone, by the task join, not the worker fallback
    assert found.kinds == {0: "task"}
    assert found.profile == Counter({"invoke_tool;call_tool;post": 1000})
    assert found.owners == {"invoke_tool;call_tool;post": [2001]}
    # AND the hold profile (the flamegraph's) agrees
    profile = hold_stacks.hold_attribution(held, samples, interval=0.5)[0]
    assert profile == Counter({"invoke_tool;call_tool;post": 1000})


def test_a_port_reused_later_or_by_another_worker_names_nothing_else() -> None:
    # GIVEN port 40001 of worker 2001 held backend 7's transaction (10-12), then, after that
    # connection closed, a new connection of the same worker got port 40001 again and
    # backend 9's transaction (15-17); worker 2002 also has a socket of port 40001
    held = ep.held_episodes(
        activity(
            row(11, 7, xact=10.0, owner=2001, port=40001),
            row(12, 7, xact=10.0, owner=2001, port=40001),
            row(13, 7, xact=None, owner=2001, port=40001),
            row(16, 9, xact=15.0, owner=2001, port=40001),
            row(17, 9, xact=15.0, owner=2001, port=40001),
            row(18, 9, xact=None, owner=2001, port=40001),
        ),
        session_end=20.0,
    )
    by_backend = dict(zip(held["pid"], held["episode_id"], strict=True))
    samples = rounds(
        (11.0, 2001, 1, "first;holder", (), (40001,)),
        (11.0, 2001, 2, "first;bystander", (), ()),
        (16.0, 2001, 3, "second;holder", (), (40001,)),
        (16.0, 2001, 4, "second;bystander", (), ()),
        (16.0, 2002, 5, "other;worker", (), (40001,)),
    )
    # WHEN held time is attributed
    found = attribute_tasks(held, samples, interval=1.0)
    # THEN each transaction went to the task holding the port in its own window only
    assert found.per_episode is not None
    stacks = found.per_episode.groupby("episode_id")["stack"].apply(set).to_dict()
    assert stacks == {by_backend[7]: {"first;holder"}, by_backend[9]: {"second;holder"}}
    assert set(found.kinds.values()) == {"task"}
    assert "other;worker" not in found.profile


def test_without_ports_a_task_through_the_pooler_falls_back_as_before() -> None:
    # GIVEN task samples written before ports were recorded (no ports column)
    held = ep.held_episodes(
        activity(
            row(11, 7, xact=10.0, owner=2001, port=40001),
            row(12, 7, xact=None, owner=2001, port=40001),
        ),
        session_end=20.0,
    )
    samples = rounds((10.5, 2001, 1, "a;post", (CANCEL_KEY,), ())).drop(columns="ports")
    # WHEN held time is attributed, THEN only the worker fallback can say anything
    assert attribute_tasks(held, samples, interval=1.0).kinds == {0: "worker-fallback"}


@pytest.mark.parametrize("columnar", [False, True])
def test_the_owners_client_port_is_recorded_and_read_back_as_owner_port(
    tmp_path: Path, columnar: bool
) -> None:
    # GIVEN a recording whose backend 7 is owned through PgBouncer by port 40001, and
    # backend 8 over a Unix socket (no port)
    path = tmp_path / activity_table.JSONL_NAME
    behind = Owner("process", 2001, "granian", "", (2001,), "pgbouncer", client_port=40001)
    local = Owner("process", 2002, "granian", "", (2002,))
    with RecordingWriter(path, {"interval": 1.0}) as writer:
        rows = tuple(
            client_backend(
                T0,
                pid,
                state=IDLE_TX,
                backend_start=T0 - 9,
                query_start=T0 - 1,
                state_change=T0 - 1,
                xact_start=T0 - 1,
            )
            for pid in (7, 8)
        )
        taken = datetime.fromtimestamp(T0, timezone.utc)
        writer.add(Snapshot(taken, 160004, rows, {7: behind, 8: local}, {}))
    # WHEN the table is read (from the JSONL, or the Parquet made from it)
    if columnar:
        activity_table.convert(path, tmp_path / activity_table.PARQUET_NAME)
        table = activity_table.read_parquet(tmp_path / activity_table.PARQUET_NAME).frame
    else:
        table = activity_table.frame_from_jsonl(path)
    # THEN the owner's port is there for the pooled one, null for the other
    ports = dict(zip(table["pid"], table["owner_port"], strict=True))
    assert ports[7] == 40001
    assert pd.isna(ports[8])
    held = ep.held_episodes(table, session_end=T0 + 5)
    assert dict(zip(held["pid"], held["owner_port"], strict=True))[7] == 40001


# -- the sampler's side: the port of each connection a task holds ---------------------------

PORT_SQL = "SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()"


@pytest.mark.postgres
def test_psycopg_and_psycopg2_connections_name_their_sockets_port(postgres_dsn: str) -> None:
    import psycopg
    import psycopg2

    # GIVEN a psycopg 3 and a psycopg2 connection over TCP, each reachable from a frame
    with psycopg.connect(postgres_dsn) as three:
        other = psycopg2.connect(postgres_dsn)
        try:
            row = three.execute(PORT_SQL).fetchone()
            with other.cursor() as cursor:
                cursor.execute(PORT_SQL)
                row2 = cursor.fetchone()
            assert row is not None and row2 is not None
            # WHEN the sampler's walk finds them
            pids, ports = task_payload.find_connections([{"db": three}, [other]])
            # THEN it names both backends and both client ports, as PostgreSQL sees them
            assert pids == sorted([three.info.backend_pid, other.get_backend_pid()])
            assert ports == sorted([row[0], row2[0]])
            # AND a second round asks the kernel nothing new (the port is remembered)
            cached = dict(task_payload._PORTS)
            assert task_payload.find_connections([three, other])[1] == ports
            assert cached == task_payload._PORTS
        finally:
            other.close()


@pytest.mark.postgres
def test_an_asyncpg_connection_names_its_sockets_port(postgres_dsn: str) -> None:
    import asyncpg

    async def check() -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            port = await conn.fetchval(PORT_SQL)
            assert task_payload.find_connections([conn]) == ([conn.get_server_pid()], [port])
        finally:
            await conn.close()

    asyncio.run(check())


@pytest.mark.postgres
def test_a_unix_socket_connection_names_no_port(postgres_dsn: str) -> None:
    import psycopg

    from tests.test_unix_sockets import _socket_dsn

    dsn = _socket_dsn(postgres_dsn)
    if dsn is None:
        pytest.skip("the test server cannot be reached through a Unix socket")
    with psycopg.connect(dsn) as conn:
        assert task_payload.find_connections([conn]) == ([conn.info.backend_pid], [])
