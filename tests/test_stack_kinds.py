"""Which py-spy stacks are threads only waiting, on real ``py-spy record --idle`` output.

``tests/data/pyspy/`` holds collapsed stacks as ``profiler session run --cpu`` wrote them
(``cpu/collapsed-merged-*.txt``) for the lab gateway's two workers:

* ``uvicorn-held-merged.txt``, the whole file of a held-mode session under uvicorn: the
  pool is exhausted, so the event loop sleeps in a sync handler's ``QueuePool._do_get``;
  the rest is AnyIO's idle worker threads, uvicorn's supervisor pipe, the task sampler's
  thread between rounds and the event loop in ``select``;
* ``granian-merged-excerpt.txt``, the stacks of 5 samples or more of a session under
  Granian, and its one stack that opens a connection inside a pool checkout (psycopg's
  ``wait_conn`` in ``select``).
"""

from __future__ import annotations

import doctest
from pathlib import Path

from profiler.analysis import collapsed, stack_kinds
from profiler.analysis.stack_kinds import is_pool_wait, is_waiting, work_only

DATA = Path(__file__).parent / "data" / "pyspy"


def leaf(stack: str) -> str:
    return collapsed.frames(stack)[-1]


def test_the_modules_doctests_pass() -> None:
    result = doctest.testmod(stack_kinds)
    assert result.failed == 0 and result.attempted > 0


def test_a_held_session_keeps_only_its_pool_waits_and_the_work() -> None:
    # GIVEN a held session's merged stacks, idle threads included
    stacks = collapsed.read(DATA / "uvicorn-held-merged.txt")
    # WHEN split
    work, waiting = work_only(stacks)
    # THEN the idle threads are left out, each by its own blocking leaf
    left_out = {stack: count for stack, count in stacks.items() if stack not in work}
    assert waiting == sum(left_out.values()) == 5922 + 1283 + 1186 + 625
    assert {leaf(stack) for stack in left_out} == {
        "Condition.wait (threading.py:327)",  # AnyIO worker threads in Queue.get
        "Condition.wait (threading.py:331)",  # the task sampler's Event.wait
        "Connection._recv (multiprocessing/connection.py:395)",  # uvicorn's supervisor pipe
        "EpollSelector.select (selectors.py:468)",  # the event loop in _run_once
    }
    anyio = next(stack for stack, count in left_out.items() if count == 5922)
    assert "WorkerThread.run (anyio/_backends/_asyncio.py:1113)" in anyio
    loop = next(stack for stack, count in left_out.items() if count == 625)
    assert "BaseEventLoop._run_once (asyncio/base_events.py:1884)" in loop
    # AND the blocked pool checkout, asleep in the same Condition.wait, is kept
    pool = {stack: count for stack, count in work.items() if is_pool_wait(stack)}
    assert sum(pool.values()) == 658
    # (the event loop itself, asleep in a sync handler's checkout: the blocked loop)
    assert all("list_resources (profiler/lab/gateway/held.py:" in stack for stack in pool)
    assert all("BaseEventLoop._run_once" in stack for stack in pool)
    assert all(leaf(stack) == "Condition.wait (threading.py:331)" for stack in pool)
    # AND so is the rest, which runs (the task sampler's rounds)
    assert not any(is_waiting(stack) for stack in work)
    assert sum(work.values()) + waiting == collapsed.total(stacks)
    assert waiting / collapsed.total(stacks) > 0.9


def test_queries_and_connects_are_work_and_the_loop_in_select_is_not() -> None:
    stacks = collapsed.read(DATA / "granian-merged-excerpt.txt")
    work, waiting = work_only(stacks)
    assert waiting == 6642 + 1105 + 1096
    # psycopg waiting for a query's result: a request's time, kept
    queries = [stack for stack in work if leaf(stack).startswith("Connection.wait (psycopg/")]
    assert sum(work[stack] for stack in queries) == 15 + 8 + 7 + 6 + 6
    # a connect in a pool checkout sleeps in select too, and is kept
    connect = next(stack for stack in stacks if "wait_conn (psycopg/waiting.py" in stack)
    assert leaf(connect) == "EpollSelector.select (selectors.py:468)"
    assert connect in work
    # the loop's own callbacks run: kept
    assert any("BaseSelectorEventLoop._read_from_self" in stack for stack in work)


def test_native_sleeps_and_uvloop_runners_are_waits() -> None:
    # py-spy --native: C frames under the innermost Python frame
    assert is_waiting(
        "worker (app/jobs.py:10);pysleep (timemodule.c:2131);clock_nanosleep (libc.so.6)"
    )
    assert is_waiting(
        "loop (app/x.py:3);select_epoll_poll (selectmodule.c:1);epoll_wait (libc.so.6)"
    )
    assert not is_waiting("handler (app/x.py:3);_PyEval_EvalFrameDefault (libpython3.12.so)")
    # uvloop's loop is C: idle, its innermost Python frame is the runner
    assert is_waiting("main (uvicorn/main.py:1);Runner.run (asyncio/runners.py:118)")
    assert is_waiting("main (app.py:1);run (uvloop/__init__.py:109)")
    assert not is_waiting("Runner.run (asyncio/runners.py:118);handler (app/x.py:3)")
    # a library's own queue.py is not the stdlib's
    assert not is_waiting("poll (celery/x.py:1);Queue.get (kombu/queue.py:9)")
    assert is_waiting("w (app.py:1);Queue.get (/usr/lib/python3.12/queue.py:171)")
