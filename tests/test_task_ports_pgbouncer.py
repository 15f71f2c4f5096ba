"""The task ↔ backend join through a real PgBouncer: by the client socket's port.

A real asyncio worker holds transactions through a real PgBouncer, in tasks
suspended at an ``await`` (the lab's held pattern). Behind PgBouncer the backend
PID its driver reports is PgBouncer's cancel key, so the only way its tasks name
a PostgreSQL backend is the local port of their sockets, which PgBouncer's
``SHOW CLIENTS`` shows and the owner of the backend records.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from profiler.capture import task_payload
from profiler.lab import pgbouncer as lab_pgbouncer
from profiler.pg.dsn import to_sqlalchemy
from profiler.pg.sampler import ActivitySampler
from tests.conftest import CliResult
from tests.test_pgbouncer import StartPooler, requires_pgbouncer, start_pooler

__all__ = ["start_pooler"]  # the fixture, shared with test_pgbouncer
pytestmark = [pytest.mark.postgres, requires_pgbouncer]

HOLDERS = 4  # PgBouncer's cancel keys are random: some are negative, some positive
WORKER = """
import asyncio

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

engine = create_engine({url!r}, pool_size={holders}, connect_args={{"prepare_threshold": None}})


async def held_marker(ready):
    session = Session(engine)
    session.execute(text("SELECT 1"))  # autobegin: idle in transaction from here
    ready.set_result(None)
    await asyncio.sleep(600)  # a downstream call, holding the transaction


async def main():
    loop = asyncio.get_running_loop()
    readies = [loop.create_future() for _ in range({holders})]
    running = [asyncio.create_task(held_marker(r), name=f"holder-{{i}}") for i, r in
               enumerate(readies)]
    await asyncio.gather(*readies)
    print("ready", flush=True)
    await asyncio.gather(*running)


asyncio.run(main())
"""


def test_a_task_names_the_port_its_backends_owner_holds_through_pgbouncer(
    start_pooler: StartPooler, postgres_dsn: str
) -> None:
    # GIVEN a task of ours holding a transaction through PgBouncer
    pooler = start_pooler("transaction")
    through = lab_pgbouncer.through(postgres_dsn, pooler.port)
    loop = asyncio.new_event_loop()
    release: asyncio.Future[None] = loop.create_future()
    ready: asyncio.Future[None] = loop.create_future()

    async def holder_marker() -> None:
        async with await psycopg.AsyncConnection.connect(through, prepare_threshold=None) as conn:
            await conn.execute("SELECT 1")  # the transaction stays open
            ready.set_result(None)
            await release

    task = loop.create_task(holder_marker())
    try:
        loop.run_until_complete(asyncio.wait_for(asyncio.shield(ready), 10))
        # WHEN the sampler describes it, and the activity sampler reads PostgreSQL
        record = task_payload.describe_task(task)
        with ActivitySampler(postgres_dsn, pgbouncer=pooler.admin_dsn) as sampler:
            owners = sampler.snapshot().owners
    finally:
        release.set_result(None)
        loop.run_until_complete(task)
        loop.close()
    # THEN the task names one port, and exactly one backend is ours through that port
    assert len(record["ports"]) == 1, record
    ours = [
        owner
        for owner in owners.values()
        if owner.pid == os.getpid() and owner.client_port in record["ports"]
    ]
    assert len(ours) == 1 and ours[0].via == "pgbouncer", owners
    # AND no backend PID the task names is a PostgreSQL backend (the cancel key)
    assert not set(record["backends"]) & set(owners), record


@pytest.mark.slow
def test_a_session_through_pgbouncer_attributes_held_time_to_the_holding_tasks(
    run_cli: Callable[..., CliResult],
    python_process: Callable[[str], subprocess.Popen[str]],
    start_pooler: StartPooler,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    # GIVEN an asyncio worker whose tasks hold transactions through PgBouncer
    pooler = start_pooler("session")
    through = lab_pgbouncer.through(postgres_dsn, pooler.port)
    worker = python_process(WORKER.format(url=to_sqlalchemy(through), holders=HOLDERS))
    out = tmp_path / "session"
    # WHEN a short session runs with the task sampler injected into the worker
    result = run_cli(
        "session",
        "run",
        "--pid",
        str(worker.pid),
        "--dsn",
        postgres_dsn,
        "--pgbouncer",
        pooler.admin_dsn,
        "-d",
        "3",
        "--no-cpu",
        "-o",
        str(out),
        timeout=180,
    )
    assert result.exit_code == 0, result.output
    # THEN every transaction the worker held is attributed to its task, not the fallback
    shown = run_cli("session", "show", str(out), "--json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    held = [h for h in report["held_connections"] if h["owner_pid"] == worker.pid]
    assert len(held) == HOLDERS, report["held_connections"]
    assert all(h["via"] == "pgbouncer" for h in held), held
    assert [h["attribution"] for h in held] == ["task"] * HOLDERS, held
    assert set(report["attributed_seconds"]) == {"task"}, report["attributed_seconds"]
    # AND the held code path is the holders' own frame
    paths = json.dumps(report["findings"])
    assert "held_marker" in paths, paths
