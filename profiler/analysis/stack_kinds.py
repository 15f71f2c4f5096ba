"""What a thread's collapsed stack says it was doing: waiting on a pool, running an event loop.

A py-spy sample carries frame labels (``name (file:line)``) and nothing else,
so these read the files and names in them. They are the evidence of the
pool rules in :mod:`profiler.analysis.findings`:

* a thread *in a pool checkout*: any frame of SQLAlchemy's pool, psycopg_pool's
  ``getconn`` or asyncpg's ``acquire``;
* a thread *blocked* in one: below the pool frame, the thread sleeps on a lock
  or condition (``Condition.wait`` in ``threading.py``), which a sync pool
  does only when it has no connection to give;
* an *event loop* thread: a frame of asyncio's loop (``base_events.py``,
  ``events.py``, ``runners.py``) or of uvloop. A pool wait on that thread stops
  every coroutine of the worker, including those that would release a
  connection.
"""

from __future__ import annotations

from functools import lru_cache

from profiler.analysis.collapsed import frames as stack_frames
from profiler.analysis.collapsed import split_label

LOOP_FILES = ("asyncio/base_events.py", "asyncio/events.py", "asyncio/runners.py")
SLEEPS = frozenset({"wait", "wait_for", "acquire"})


def is_pool_wait(stack: str) -> bool:
    """Whether a collapsed stack shows a thread checking a connection out of a pool.

    SQLAlchemy: any frame in ``sqlalchemy/pool`` or named ``_do_get`` or
    ``QueuePool...``; psycopg_pool: ``getconn``/``_wait``/``wait`` in a
    ``psycopg_pool`` file; asyncpg: ``acquire`` in ``asyncpg/pool``.

    >>> is_pool_wait("handler (app.py:3);QueuePool._do_get (sqlalchemy/pool/impl.py:167)")
    True
    >>> is_pool_wait("handler (app.py:3);execute (sqlalchemy/engine/base.py:1412)")
    False
    """
    return any(_is_pool_frame(label) for label in stack_frames(stack))


def is_blocked_on_pool(stack: str) -> bool:
    """Whether the thread sleeps inside a pool checkout: no connection was free.

    A checkout that finds a connection passes through the pool's frames too;
    only one that sleeps on a lock or condition of ``threading.py`` below
    them is a wait (native frames under the sleep are allowed).

    >>> is_blocked_on_pool(
    ...     "h (app.py:3);QueuePool._do_get (sqlalchemy/pool/impl.py:155);"
    ...     "Queue.get (sqlalchemy/util/queue.py:199);Condition.wait (threading.py:331)"
    ... )
    True
    >>> is_blocked_on_pool("h (app.py:3);QueuePool._do_get (sqlalchemy/pool/impl.py:155)")
    False
    """
    labels = stack_frames(stack)
    innermost_pool = max((i for i, label in enumerate(labels) if _is_pool_frame(label)), default=-1)
    return innermost_pool >= 0 and any(_is_sleep(label) for label in labels[innermost_pool + 1 :])


DATABASE_FILES = ("sqlalchemy/", "psycopg/", "psycopg2/", "psycopg_pool/", "asyncpg/")


def is_database_call(stack: str) -> bool:
    """Whether the thread is inside a database driver or SQLAlchemy call other than a pool
    checkout (those are :func:`is_pool_wait`): a query, a commit, a connect.

    >>> is_database_call("h (app.py:3);Session.execute (sqlalchemy/orm/session.py:2300)")
    True
    >>> is_database_call("h (app.py:3);QueuePool._do_get (sqlalchemy/pool/impl.py:155)")
    False
    """
    labels = stack_frames(stack)
    if any(_is_pool_frame(label) for label in labels):
        return False
    return any(_is_database_frame(label) for label in labels)


@lru_cache(maxsize=4096)
def _is_database_frame(label: str) -> bool:
    path = split_label(label).file.replace("\\", "/")
    return any(part in path or path.startswith(part) for part in DATABASE_FILES)


def is_event_loop(stack: str) -> bool:
    """Whether the stack is an asyncio (or uvloop) event loop's thread.

    >>> is_event_loop("main (app.py:9);BaseEventLoop._run_once (asyncio/base_events.py:1922)")
    True
    >>> is_event_loop("Thread.run (threading.py:982);WorkerThread.run (anyio/_backends/x.py:1)")
    False
    """
    return any(_is_loop_frame(label) for label in stack_frames(stack))


@lru_cache(maxsize=4096)
def _is_pool_frame(label: str) -> bool:
    name, file, _ = split_label(label)
    path = file.replace("\\", "/")
    method = name.rsplit(".", 1)[-1]
    if "sqlalchemy/pool" in path or method == "_do_get" or "QueuePool" in name:
        return True
    if "psycopg_pool" in path and method in {"getconn", "_getconn_unchecked", "_wait", "wait"}:
        return True
    return "asyncpg/pool" in path and method in {"acquire", "_acquire", "_acquire_impl"}


@lru_cache(maxsize=4096)
def _is_sleep(label: str) -> bool:
    name, file, _ = split_label(label)
    path = file.replace("\\", "/")
    method = name.rsplit(".", 1)[-1]
    return path.endswith("threading.py") and method in SLEEPS


@lru_cache(maxsize=4096)
def _is_loop_frame(label: str) -> bool:
    _, file, _ = split_label(label)
    path = file.replace("\\", "/")
    return path.endswith(LOOP_FILES) or "uvloop/" in path or path.startswith("uvloop")
