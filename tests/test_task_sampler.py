"""The asyncio task sampler: injected into real workers, and its walk on real objects.

Real attach tests start a Python target that prints ``ready``, inject the
sampler through gdb (memray's channel) and read the file back through
:func:`profiler.capture.task_log.read`. The unit tests drive a real event loop
by hand and point the walk at real psycopg, psycopg2, asyncpg and SQLAlchemy (sync
and async) connections.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from profiler.capture import pool_log, task_control, task_inject, task_log, task_payload
from profiler.capture.processes import stop_pid
from profiler.capture.stacks import Frame
from profiler.errors import AttachError, InputError, UsageError
from profiler.pg.dsn import to_sqlalchemy
from tests.helpers import lines_of_kind, retry

HOLDERS = """
import asyncio

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

DSN = {dsn!r}
engine = create_engine({url!r})


async def hold_connection(started):
    conn = await psycopg.AsyncConnection.connect(DSN)
    await conn.execute("select 1")
    started.set_result(conn.info.backend_pid)
    await asyncio.sleep(600)


async def hold_session(started):
    session = Session(engine)
    started.set_result(session.connection().connection.dbapi_connection.info.backend_pid)
    await asyncio.sleep(600)


async def main():
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    running = [
        asyncio.create_task(hold_connection(first), name="psycopg-holder"),
        asyncio.create_task(hold_session(second), name="sqlalchemy-holder"),
    ]
    pids = [await first, await second]
    print("ready", flush=True)
    print(*pids, flush=True)
    await asyncio.gather(*running)


asyncio.run(main())
"""

SLEEPERS = """
import asyncio


async def sampler_test_marker():
    await asyncio.sleep(600)


async def main():
    others = [asyncio.create_task(sampler_test_marker()) for _ in range(3)]
    print("ready", flush=True)
    await asyncio.gather(*others)


asyncio.run(main())
"""

NO_LOOP = """
import time

print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


def _inject_and_wait(pid: int, path: Path, **options: Any) -> None:
    task_inject.inject(pid, path, **options)
    assert task_control.wait_for_end([path], timeout=20) == []


# -- real workers --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_tasks_holding_connections_name_their_backends(
    python_process: Any, postgres_dsn: str, tmp_path: Path
) -> None:
    # GIVEN a worker whose tasks hold a psycopg connection and a SQLAlchemy session
    child = python_process(HOLDERS.format(dsn=postgres_dsn, url=to_sqlalchemy(postgres_dsn)))
    psycopg_pid, session_pid = map(int, child.stdout.readline().split())
    path = tmp_path / "tasks.jsonl"

    # WHEN the sampler runs in it for 1.5 s at 10 Hz
    _inject_and_wait(child.pid, path, interval=0.1, duration=1.5)

    # THEN each holder's task names its own backend, every round
    samples = task_log.read(path)
    assert (samples["worker_pid"] == child.pid).all()
    assert str(samples["taken_at"].dtype) == "datetime64[ns, UTC]"
    holder = samples[samples["task"] == "psycopg-holder"]
    session = samples[samples["task"] == "sqlalchemy-holder"]
    rounds = task_log.read_rounds(path)
    assert len(rounds) >= 10
    assert len(holder) == len(session) == len(rounds)
    assert holder["stack"].str.contains("hold_connection (<string>:", regex=False).all()
    assert set(holder["backends"]) == {(psycopg_pid,)}
    assert set(session["backends"]) == {(session_pid,)}
    assert set(samples.loc[samples["task"] == "Task-1", "backends"]) == {()}
    assert task_log.read_end(path)["reason"] == "duration"  # type: ignore[index]


POOL_HOLDERS = """
import threading
import time

from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_engine({url!r}, pool_size=2, max_overflow=1, pool_timeout=600)
spare = create_async_engine({url!r}, pool_size=4, max_overflow=3)  # never used
held = [engine.connect() for _ in range(3)]  # the pool's 2 + 1 overflow, all checked out
for connection in held:
    connection.execute(text("select 1"))
waiter = threading.Thread(target=engine.connect, daemon=True)  # waits for a 4th
waiter.start()
while not engine.pool._pool.not_empty._waiters:  # the waiter is in its checkout
    time.sleep(0.01)
with open({payload!r}, encoding="utf-8") as payload:  # what the debugger would send
    exec(compile(payload.read(), "<profiler-task-sampler>", "exec"), {{}})
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_the_pools_of_a_worker_are_read_with_their_real_figures(
    python_process: Any, postgres_dsn: str, tmp_path: Path
) -> None:
    # GIVEN a worker whose sync pool (2 + 1) is all checked out with a thread waiting,
    # and an async engine's pool (4 + 3) it never used
    path = tmp_path / "tasks.jsonl"
    payload = tmp_path / "payload.py"
    payload.write_text(task_inject.payload_source(path, interval=0.1, duration=1.0))
    url = to_sqlalchemy(postgres_dsn)  # psycopg 3: sync and async alike
    # WHEN the payload runs in it: the exact source the injection sends (started by the
    # worker itself, so this holds wherever the debugger cannot attach)
    child = python_process(POOL_HOLDERS.format(url=url, payload=str(payload)))
    assert task_control.wait_for_end([path], timeout=20) == []
    # THEN every round records both pools with their real figures
    figures = pool_log.read(path)
    rounds = task_log.read_rounds(path)
    assert len(figures) == 2 * len(rounds) and len(rounds) >= 5
    assert (figures["worker_pid"] == child.pid).all()
    by_class = figures.drop_duplicates("pool_class").set_index("pool_class")
    queue = by_class.loc["QueuePool"]
    assert (queue["size"], queue["max_overflow"], queue["timeout"]) == (2, 1, 600.0)
    assert (queue["checked_out"], queue["waiting"]) == (3, 1)
    spare = by_class.loc["AsyncAdaptedQueuePool"]
    assert (spare["size"], spare["max_overflow"], spare["checked_out"]) == (4, 3, 0)
    # AND the task file reads as before
    assert task_log.read_end(path)["reason"] == "duration"  # type: ignore[index]


def test_a_worker_without_sqlalchemy_has_no_pools_and_costs_no_scan() -> None:
    # GIVEN this process with SQLAlchemy's pool module hidden, as in a worker that never
    # imported it
    import sys

    hidden = sys.modules.pop("sqlalchemy.pool.base", None)
    try:
        line = json.loads(task_payload.PoolWatch().line())
    finally:
        if hidden is not None:
            sys.modules["sqlalchemy.pool.base"] = hidden
    # THEN the pools line is empty
    assert line["kind"] == "pools" and line["pools"] == []


@pytest.mark.slow
def test_a_stop_request_ends_sampling_at_the_next_round(
    python_process: Any, tmp_path: Path
) -> None:
    # GIVEN a sampler injected for a minute
    child = python_process(SLEEPERS)
    path = tmp_path / "tasks.jsonl"
    task_inject.inject(child.pid, path, interval=0.1, duration=60)
    retry(lambda: len(task_log.read_rounds(path)) >= 2, what="two rounds")

    # WHEN we ask it to stop
    task_control.request_stop(path)

    # THEN it ends within a round or two, says why, and the stop file is cleaned up
    assert task_control.wait_for_end([path], timeout=5) == []
    assert task_log.read_end(path)["reason"] == "stopped"  # type: ignore[index]
    assert not Path(f"{path}.stop").exists()
    samples = task_log.read(path)
    markers = samples[samples["stack"].str.contains("sampler_test_marker")]
    assert markers["leaf"].astype(str).eq("sleep").all()
    assert markers["task_id"].nunique() == 3
    assert child.poll() is None  # the worker goes on


@pytest.mark.slow
def test_a_worker_without_an_event_loop_gives_empty_rounds(
    python_process: Any, tmp_path: Path
) -> None:
    # GIVEN a Python process that never started asyncio
    child = python_process(NO_LOOP)
    path = tmp_path / "tasks.jsonl"

    # WHEN the sampler runs in it
    _inject_and_wait(child.pid, path, interval=0.1, duration=0.5)

    # THEN it wrote rounds of no task, and no error
    assert task_log.read(path).empty
    rounds = task_log.read_rounds(path)
    assert len(rounds) >= 3
    assert (rounds["tasks"] == 0).all()
    assert task_log.read_end(path)["reason"] == "duration"  # type: ignore[index]
    assert task_log.read_header(path)["pid"] == child.pid


@pytest.mark.slow
def test_a_process_that_is_gone_or_not_python_cannot_be_injected(tmp_path: Path) -> None:
    # GIVEN a PID that no longer runs, and a process that is not Python
    gone = subprocess.Popen(["true"])
    gone.wait()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # WHEN / THEN each is a one-line AttachError, and nothing is written
        with pytest.raises(AttachError, match=f"no process with PID {gone.pid}"):
            task_inject.inject(gone.pid, tmp_path / "gone.jsonl", interval=0.1, duration=1)
        with pytest.raises(AttachError, match="not a Python process") as raised:
            task_inject.inject(sleeper.pid, tmp_path / "sleep.jsonl", interval=0.1, duration=1)
        assert raised.value.hint
        assert not list(tmp_path.iterdir())
    finally:
        stop_pid(sleeper.pid)
        sleeper.wait()


def test_an_existing_output_is_refused_before_anything_is_injected(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("keep me\n")
    with pytest.raises(UsageError, match="already exists"):
        task_inject.inject(1, path, interval=0.1, duration=1)
    assert path.read_text() == "keep me\n"


# -- the payload, in this process ----------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop driven by hand: tasks stay suspended while the test looks at them."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    pending = [task for task in asyncio.all_tasks(event_loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        event_loop.run_until_complete(asyncio.wait(pending))
    event_loop.close()


async def _inner_marker(future: asyncio.Future[None]) -> None:
    await future


async def _outer_marker(future: asyncio.Future[None]) -> None:
    await _inner_marker(future)


def _suspend(loop: asyncio.AbstractEventLoop, coro: Any, name: str) -> asyncio.Task[Any]:
    task = loop.create_task(coro, name=name)
    loop.run_until_complete(asyncio.sleep(0))  # one step: now suspended
    return task


def test_the_chain_of_a_suspended_task_is_read_innermost_first(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # GIVEN a task suspended two coroutines deep on a Future
    future: asyncio.Future[None] = loop.create_future()
    task = _suspend(loop, _outer_marker(future), "walked")

    # WHEN it is described
    record = task_payload.describe_task(task)

    # THEN frames are innermost first, with qualified names and lines, like py-spy's
    names = [frame[0] for frame in record["frames"]]
    assert names == ["_inner_marker", "_outer_marker"]
    assert all(frame[1] == __file__ and frame[2] > 0 for frame in record["frames"])
    assert record["awaiting"] == "Future"
    assert record["running"] is False
    assert record["backends"] == []
    assert record["task"] == "walked"


def test_a_finished_coroutine_has_no_frames(loop: asyncio.AbstractEventLoop) -> None:
    future: asyncio.Future[None] = loop.create_future()
    coro = _outer_marker(future)
    task = _suspend(loop, coro, "finishing")
    future.set_result(None)
    loop.run_until_complete(task)
    assert task_payload.walk_chain(coro) == ([], [], None)


@pytest.mark.postgres
def test_open_psycopg_connections_are_found_closed_ones_are_not(postgres_dsn: str) -> None:
    # GIVEN an open connection two containers deep, and a closed one beside it
    with psycopg.connect(postgres_dsn) as conn:
        closed = psycopg.connect(postgres_dsn)
        closed.close()
        roots = [{"deps": [conn, closed]}, "a string"]

        # WHEN the walk looks at them
        found = task_payload.find_backends(roots)

        # THEN only the open one is named
        assert found == [conn.info.backend_pid]


@pytest.mark.postgres
def test_connections_beyond_the_depth_limit_are_not_found(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        deep: Any = conn
        for _ in range(task_payload.MAX_DEPTH + 1):
            deep = [deep]
        assert task_payload.find_backends([deep]) == []
        assert task_payload.find_backends([deep[0]]) == [conn.info.backend_pid]


@pytest.mark.postgres
def test_a_session_in_a_suspended_task_names_its_backend_and_only_while_it_holds_it(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(to_sqlalchemy(postgres_dsn))
    release: asyncio.Future[None] = loop.create_future()
    committed: asyncio.Future[None] = loop.create_future()
    pids: list[int] = []

    async def handler_marker() -> None:
        session = Session(engine)
        pids.append(session.connection().connection.dbapi_connection.info.backend_pid)
        await release
        session.commit()  # the connection goes back to the pool; the session stays
        await committed

    # GIVEN a task holding a session's connection
    task = _suspend(loop, handler_marker(), "handler")
    try:
        # THEN the task names that backend
        assert task_payload.describe_task(task)["backends"] == pids
        # WHEN the transaction ends, THEN it names none
        release.set_result(None)
        loop.run_until_complete(asyncio.sleep(0))
        assert task_payload.describe_task(task)["backends"] == []
    finally:
        committed.set_result(None)
        loop.run_until_complete(task)
        engine.dispose()


@pytest.mark.postgres
def test_openers_name_the_yield_dependency_and_the_frame_that_hold_a_session(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    from contextlib import AsyncExitStack, contextmanager

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(to_sqlalchemy(postgres_dsn))
    release: asyncio.Future[None] = loop.create_future()
    pids: dict[str, int] = {}

    def get_db() -> Iterator[Session]:  # a yield dependency, entered on the exit stack
        db = Session(engine)
        try:
            yield db
        finally:
            db.close()

    def pid_of(db: Session) -> int:
        return int(db.connection().connection.dbapi_connection.info.backend_pid)

    async def request_marker() -> None:
        async with AsyncExitStack() as stack:
            pids["get_db"] = pid_of(stack.enter_context(contextmanager(get_db)()))
            own = Session(engine)  # the handler's own session: a frame local
            pids["own"] = pid_of(own)
            await release
            own.close()

    # GIVEN a request task suspended holding both
    task = _suspend(loop, request_marker(), "request")
    try:
        # WHEN its openers are read
        record = task_payload.describe_task(task)
        found = {(row[0], row[1].rsplit(".", 1)[-1], row[4]) for row in record["openers"]}
        # THEN the dependency's session is named by the dependency, the other by the frame
        assert (pids["get_db"], "get_db", "dependency") in found, record["openers"]
        assert (pids["own"], "request_marker", "frame") in found, record["openers"]
        assert all(row[2] == __file__ and row[3] > 0 for row in record["openers"])
    finally:
        release.set_result(None)
        loop.run_until_complete(task)
        engine.dispose()


class _Steps:
    """The hand-offs between a test and the holder task it drives, on the test's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.held: asyncio.Future[int] = loop.create_future()  # holder: its backend, by SQL
        self.release: asyncio.Future[None] = loop.create_future()  # test: let go of it
        self.released: asyncio.Future[None] = loop.create_future()  # holder: let go, waits on
        self.finish: asyncio.Future[None] = loop.create_future()  # test: return


def _run_until(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], step: asyncio.Future[Any]
) -> Any:
    """Drive the loop until the holder reaches ``step``; its own error if it fails first."""
    loop.run_until_complete(
        asyncio.wait([task, step], timeout=5, return_when=asyncio.FIRST_COMPLETED)
    )
    if task.done():
        task.result()
    assert step.done(), "the holder task did not reach its next step within 5 s"
    return step.result()


def _held_then_released(
    loop: asyncio.AbstractEventLoop, holder: Any
) -> tuple[int, list[int], list[int]]:
    """Run ``holder(steps)`` as a task; describe it while it holds its connection and
    after it let go of it, suspended both times. Returns (the backend PID the holder read
    with ``SELECT pg_backend_pid()``, the backends named then, the backends named after)."""
    steps = _Steps(loop)
    task = loop.create_task(holder(steps), name="holder")
    try:
        pid = _run_until(loop, task, steps.held)
        while_held = task_payload.describe_task(task)
        assert while_held["running"] is False
        assert while_held["frames"][0][0].endswith("holder_marker")
        steps.release.set_result(None)
        _run_until(loop, task, steps.released)
        after = task_payload.describe_task(task)
        assert after["frames"][0][0].endswith("holder_marker")
    finally:
        for step in (steps.release, steps.finish):
            if not step.done():
                step.set_result(None)
        loop.run_until_complete(task)  # the holder closes what it opened
    return pid, while_held["backends"], after["backends"]


@pytest.mark.postgres
def test_a_psycopg2_connection_in_a_suspended_task_names_its_backend_until_closed(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    import psycopg2

    async def holder_marker(steps: _Steps) -> None:
        conn = psycopg2.connect(postgres_dsn)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                steps.held.set_result(cursor.fetchone()[0])
            await steps.release
        finally:
            conn.close()
        steps.released.set_result(None)  # the closed connection is still a local
        await steps.finish

    # GIVEN a task suspended while it holds a raw psycopg2 connection
    # WHEN the sampler describes it, and again once it closed the connection
    pid, while_held, after = _held_then_released(loop, holder_marker)

    # THEN it names exactly that connection's backend, then none
    assert while_held == [pid]
    assert after == []


@pytest.mark.postgres
def test_an_asyncpg_connection_in_a_suspended_task_names_its_backend_until_closed(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    import asyncpg

    async def holder_marker(steps: _Steps) -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            steps.held.set_result(await conn.fetchval("SELECT pg_backend_pid()"))
            await steps.release
        finally:
            await conn.close()
        steps.released.set_result(None)  # the closed connection is still a local
        await steps.finish

    # GIVEN a task suspended while it holds a raw asyncpg connection
    # WHEN the sampler describes it, and again once it closed the connection
    pid, while_held, after = _held_then_released(loop, holder_marker)

    # THEN it names exactly that connection's backend, then none
    assert while_held == [pid]
    assert after == []


@pytest.mark.postgres
def test_an_asyncpg_pool_connection_names_its_backend_only_while_acquired(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    import asyncpg

    idle_in_pool: list[int] = []

    async def holder_marker(steps: _Steps) -> None:
        pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:  # a PoolConnectionProxy
                steps.held.set_result(await conn.fetchval("SELECT pg_backend_pid()"))
                await steps.release
            # Released: the proxy, still a local, is detached; the pool keeps the connection open.
            idle_in_pool.append(await pool.fetchval("SELECT pg_backend_pid()"))
            steps.released.set_result(None)
            await steps.finish
        finally:
            await pool.close()

    # GIVEN a task suspended while it holds a connection acquired from an asyncpg pool
    # WHEN the sampler describes it, and again once it released it to the pool
    pid, while_held, after = _held_then_released(loop, holder_marker)

    # THEN it names exactly that backend while acquired; once released none, although the
    # pool (also a local of the task) still holds that very connection open
    assert while_held == [pid]
    assert idle_in_pool == [pid]
    assert after == []


@pytest.mark.postgres
def test_a_psycopg_pool_connection_names_its_backend_only_while_checked_out(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    from psycopg_pool import AsyncConnectionPool

    idle_in_pool: list[int] = []

    async def holder_marker(steps: _Steps) -> None:
        pool = AsyncConnectionPool(postgres_dsn, min_size=1, max_size=1, open=False)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT pg_backend_pid()")
                steps.held.set_result((await cursor.fetchone())[0])
                await steps.release
            # Given back: `conn` stays a local, open, and the pool keeps it.
            async with pool.connection() as again:
                idle_in_pool.append(again.info.backend_pid)
            steps.released.set_result(None)
            await steps.finish
        finally:
            await pool.close()

    # GIVEN a task suspended while it holds a connection checked out of a psycopg_pool
    # WHEN the sampler describes it, and again once it gave the connection back
    pid, while_held, after = _held_then_released(loop, holder_marker)

    # THEN it names exactly that backend while checked out, and none once back in the pool
    assert while_held == [pid]
    assert idle_in_pool == [pid]
    assert after == []


@pytest.mark.postgres
def test_an_asyncpg_statement_kept_after_the_release_does_not_name_the_pooled_backend(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    import asyncpg

    async def holder_marker(steps: _Steps) -> None:
        pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                statement = await conn.prepare("SELECT pg_backend_pid()")  # a PreparedStatement
                steps.held.set_result(await statement.fetchval())
                await steps.release
            # Released; `statement` stays a local and still points at the pooled connection.
            steps.released.set_result(None)
            await steps.finish
        finally:
            await pool.close()

    # GIVEN a task that keeps a prepared statement past its pool connection's release
    # WHEN the sampler describes it before and after the release
    pid, while_held, after = _held_then_released(loop, holder_marker)

    # THEN the statement does not make the pooled connection the task's
    assert while_held == [pid]
    assert after == []


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_cursor_alone_does_not_name_its_connection(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str, driver: str
) -> None:
    connect = psycopg.connect if driver == "psycopg" else __import__("psycopg2").connect
    conn = connect(postgres_dsn)  # stands for a pool: it owns the connection, not the task
    try:
        cursor = conn.cursor()  # all the task's closure sees

        async def holder_marker(steps: _Steps) -> None:
            cursor.execute("SELECT pg_backend_pid()")
            steps.held.set_result(cursor.fetchone()[0])
            await steps.release
            steps.released.set_result(None)
            await steps.finish

        # GIVEN a task whose only reference to a connection is a cursor of it
        # WHEN the sampler describes it
        _, while_held, after = _held_then_released(loop, holder_marker)
    finally:
        conn.close()

    # THEN no backend is the task's: holding a connection is the holders' say (a connection,
    # a session, a pool proxy), and a cursor outlives the checkout of its connection
    assert while_held == [] and after == []


@pytest.mark.postgres
def test_an_async_session_over_asyncpg_names_its_backend_only_inside_a_transaction(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    url = to_sqlalchemy(postgres_dsn).replace("postgresql+psycopg://", "postgresql+asyncpg://")
    engine = create_async_engine(url)

    async def holder_marker(steps: _Steps) -> None:
        async with AsyncSession(engine) as session:
            async with session.begin():
                result = await session.execute(text("SELECT pg_backend_pid()"))
                steps.held.set_result(result.scalar_one())
                await steps.release
            # Committed: the connection is back in the engine's pool; the session stays open,
            # and so does `result`, whose execution context still has the asyncpg cursor.
            steps.released.set_result(None)
            await steps.finish

    # GIVEN a task suspended inside an AsyncSession transaction (create_async_engine, asyncpg)
    # WHEN the sampler describes it, and again once the transaction committed
    try:
        pid, while_held, after = _held_then_released(loop, holder_marker)
    finally:
        loop.run_until_complete(engine.dispose())

    # THEN it names exactly the transaction's backend, then none
    assert while_held == [pid]
    assert after == []


@pytest.mark.postgres
def test_a_result_kept_after_the_commit_does_not_name_the_backend_it_came_from(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    engine = create_engine(to_sqlalchemy(postgres_dsn))

    async def holder_marker(steps: _Steps) -> None:
        with Session(engine) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            unread = session.execute(text("SELECT generate_series(1, 3)"))  # keeps its cursor
            steps.held.set_result(pid)
            await steps.release
            session.commit()  # the connection goes back to the pool; `unread` stays a local
            steps.released.set_result(None)
            await steps.finish
            unread.close()

    # GIVEN a task that keeps an unread result past its session's commit
    # WHEN the sampler describes it before and after the commit
    try:
        pid, while_held, after = _held_then_released(loop, holder_marker)
    finally:
        engine.dispose()

    # THEN the result's cursor does not make the pooled connection the task's
    assert while_held == [pid]
    assert after == []


@pytest.mark.postgres
def test_fastapi_dependency_sessions_are_found_from_the_routing_frame(postgres_dsn: str) -> None:
    import httpx
    from fastapi import Depends, FastAPI
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(to_sqlalchemy(postgres_dsn))
    app = FastAPI()
    pids: list[int] = []

    async def get_db() -> Any:
        with Session(engine) as session:
            yield session

    async def scenario() -> tuple[list[int], list[int]]:
        entered, release = asyncio.Event(), asyncio.Event()

        @app.get("/held")
        async def held(db: Session = Depends(get_db)) -> dict[str, str]:  # noqa: B008
            pids.append(db.connection().connection.dbapi_connection.info.backend_pid)
            entered.set()
            await release.wait()
            return {}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lab") as client:
            request = asyncio.create_task(client.get("/held"), name="request")
            await entered.wait()
            whole = task_payload.describe_task(request)["backends"]
            _, holders, _ = task_payload.walk_chain(request.get_coro())
            routing = [
                holder
                for holder in holders
                if holder.cr_frame.f_code.co_filename.endswith("fastapi/routing.py")
                and holder.cr_frame.f_code.co_qualname == "get_request_handler.<locals>.app"
            ]
            from_routing = task_payload.find_backends(task_payload.locals_of(routing))
            release.set()
            await request
        return whole, from_routing

    try:
        whole, from_routing = asyncio.run(scenario())
    finally:
        engine.dispose()
    assert whole == pids
    assert from_routing == pids


def test_properties_and_getattr_of_unknown_objects_are_never_run() -> None:
    calls: list[str] = []

    class Trap:
        def __init__(self) -> None:
            self.inside = {"value": 1}

        @property
        def loud(self) -> int:
            calls.append("property")
            return 1

        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            raise AttributeError(name)

    assert task_payload.find_backends([Trap(), [Trap()]]) == []
    assert calls == []


def test_the_running_task_is_recorded_without_its_locals(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def sampling_marker() -> dict[str, Any]:
        return task_payload.describe_task(asyncio.current_task())

    record = loop.run_until_complete(sampling_marker())
    assert record["running"] is True
    assert record["frames"][0][0].endswith("sampling_marker")
    assert record["backends"] == []


def test_a_round_lists_live_tasks_and_its_own_cost(loop: asyncio.AbstractEventLoop) -> None:
    futures = [loop.create_future() for _ in range(3)]
    for number, future in enumerate(futures):
        _suspend(loop, _outer_marker(future), f"t{number}")
    lines = [json.loads(line) for line in task_payload.sample_round(2).splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds == ["task", "task", "round"]
    assert lines[-1]["tasks"] == 2
    assert lines[-1]["skipped"] == 1
    assert 0 < lines[-1]["seconds"] < 1


def test_the_sent_source_runs_in_a_bare_namespace_as_the_injector_runs_it(
    tmp_path: Path,
) -> None:
    # GIVEN the exact source inject() sends, run with only __builtins__ (as memray's channel)
    path = tmp_path / "tasks.jsonl"
    source = task_inject.payload_source(path, interval=0.05, duration=30)
    exec(compile(source, "<profiler-task-sampler>", "exec"), {"__builtins__": __builtins__})
    sampler = next(t for t in threading.enumerate() if t.name == task_payload.THREAD_NAME)
    assert sampler.daemon

    # WHEN it is asked to stop once it has written two rounds (the first round scans the heap
    # for pools: in a pytest process hundreds of tests old that alone can take a second)
    retry(
        lambda: lines_of_kind(path, "round") >= 2,
        timeout=30,
        what="two sampler rounds",
    )
    task_control.request_stop(path)
    sampler.join(5)

    # THEN it ended cleanly; rounds were written and it measured itself
    assert task_log.read_end(path)["reason"] == "stopped"  # type: ignore[index]
    assert len(task_log.read_rounds(path)) >= 2
    header = task_log.read_header(path)
    assert header["format"] == "profiler-task-samples" and header["version"] == 1


def test_the_sampler_never_overwrites_and_says_so_to_the_injector(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("")
    with pytest.raises(FileExistsError):
        task_payload.start(str(path), 0.1, 1)


def test_an_expired_lease_stops_the_sampler(tmp_path: Path) -> None:
    # GIVEN a sampler with a 0.2 s lease, taken once and never renewed
    path = tmp_path / "tasks.jsonl"
    task_control.Leases([path]).renew()
    sampler = task_payload.start(str(path), 0.05, 30, lease_seconds=0.2)

    # WHEN the lease runs out, THEN the sampler ends by itself
    sampler.join(5)
    assert not sampler.is_alive()
    assert task_log.read_end(path)["reason"] == "lease expired"  # type: ignore[index]


# -- the reader ----------------------------------------------------------------------------


def _write(path: Path, *records: dict[str, Any], tail: str = "") -> None:
    header = {"kind": "header", "format": task_log.FORMAT, "version": task_log.VERSION, "pid": 42}
    lines = [json.dumps(record) for record in (header, *records)]
    path.write_text("\n".join(lines) + "\n" + tail)


TASK = {
    "kind": "task",
    "taken_at": 1_700_000_000.5,
    "task_id": 7,
    "task": "Task-7",
    "frames": [
        ["sleep", "/usr/lib/python3.11/asyncio/tasks.py", 649],
        ["handler", "/srv/app.py", 12],
    ],
    "awaiting": "Future",
    "running": False,
    "backends": [1234],
}
ROUND = {"kind": "round", "taken_at": 1_700_000_000.5, "tasks": 1, "skipped": 0, "seconds": 0.001}


def test_the_reader_types_columns_and_folds_stacks_as_py_spy_stacks(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    _write(path, TASK, ROUND)
    samples = task_log.read(path)
    row = samples.iloc[0]
    frames = [Frame("handler", "/srv/app.py", 12, None), Frame("sleep", "tasks.py", 649, None)]
    assert row["stack"] == ";".join(frame.label for frame in frames)
    assert row["leaf"] == "sleep"
    assert row["depth"] == 2
    assert row["backends"] == (1234,)
    assert row["worker_pid"] == 42
    assert str(samples["taken_at"].dtype) == "datetime64[ns, UTC]"
    assert samples["stack"].dtype == "category"
    assert samples["task_id"].dtype == "int64"
    assert task_log.read_end(path) is None
    assert list(task_log.empty().columns) == list(samples.columns)


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    _write(path, TASK, ROUND, tail='{"kind": "task", "taken_at": 17000')
    assert len(task_log.read(path)) == 1
    assert len(task_log.read_rounds(path)) == 1


def test_a_corrupt_middle_line_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    _write(path, TASK, {"kind": "task", "taken_at": 1.0}, ROUND)
    with pytest.raises(InputError, match="line 3 is corrupt"):
        task_log.read(path)


def test_another_format_or_version_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"kind": "header", "format": "something-else", "version": 1}) + "\n")
    with pytest.raises(InputError, match="is not a profiler-task-samples file"):
        task_log.read(path)
    header = {"kind": "header", "format": task_log.FORMAT, "version": 99, "pid": 1}
    path.write_text(json.dumps(header) + "\n")
    with pytest.raises(InputError, match="format version 99"):
        task_log.read(path)


@pytest.mark.postgres
def test_a_yield_dependency_that_opened_a_session_is_walked_into_and_named(
    loop: asyncio.AbstractEventLoop, postgres_dsn: str
) -> None:
    from contextlib import asynccontextmanager

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(to_sqlalchemy(postgres_dsn))
    release: asyncio.Future[None] = loop.create_future()
    pids: list[int] = []

    @asynccontextmanager
    async def get_db_marker() -> Any:
        session = Session(engine)
        try:
            pids.append(session.connection().connection.dbapi_connection.info.backend_pid)
            await release  # e.g. an auth check awaiting a downstream call, session open
            yield session
        finally:
            session.close()

    async def handler_marker() -> None:
        async with get_db_marker():
            pass

    # GIVEN a request suspended inside its yield dependency, which holds a session
    task = _suspend(loop, handler_marker(), "request")
    try:
        # WHEN it is described
        record = task_payload.describe_task(task)
        # THEN the chain goes through the context manager into the dependency's own frame,
        # and the session in its locals names the backend
        names = [frame[0] for frame in record["frames"]]
        assert names[:2] == [
            "test_a_yield_dependency_that_opened_a_session_is_walked_into_and_named"
            ".<locals>.get_db_marker",
            "_AsyncGeneratorContextManager.__aenter__",
        ], names
        assert names[-1].endswith("handler_marker")
        assert record["backends"] == pids
    finally:
        release.set_result(None)
        loop.run_until_complete(task)
        engine.dispose()
