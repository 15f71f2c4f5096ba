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
  connection;
* a thread *only waiting* (:func:`is_waiting`): its innermost frame blocks
  (a lock, a queue, a selector, a pipe, a sleep) and it is neither in a pool
  checkout nor in a database call. With ``py-spy --idle`` these are most of a
  web worker's samples (AnyIO's idle worker threads, the loop in ``select``);
  :func:`work_only` leaves them out so the work can be read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
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


# -- threads that only wait -------------------------------------------------------------------

BLOCKING_PYTHON: dict[str, frozenset[str]] = {
    "threading.py": frozenset({"wait", "wait_for", "acquire", "join", "_wait_for_tstate_lock"}),
    "queue.py": frozenset({"get", "put"}),
    "selectors.py": frozenset({"select"}),
    "multiprocessing/connection.py": frozenset(
        {"recv", "recv_bytes", "_recv", "_recv_bytes", "poll", "_poll", "wait"}
    ),
}
"""The stdlib functions whose frame, innermost, means the thread sleeps: ``Condition.wait``
(which ``Event.wait``, ``Semaphore.acquire`` and ``Queue.get`` end in), a selector's
``select`` (asyncio's ``_run_once`` idles there), a pipe read (uvicorn's supervisor ping)."""
BLOCKING_NATIVE = frozenset(
    {
        "sleep",
        "time.sleep",
        "nanosleep",
        "clock_nanosleep",
        "epoll_wait",
        "epoll_pwait",
        "epoll.poll",
        "poll",
        "ppoll",
        "select",
        "pselect",
        "sem_wait",
        "sem_timedwait",
        "sem_clockwait",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "pthread_cond_clockwait",
        "__futex_abstimed_wait_common",
        "futex_wait",
        "do_futex_wait",
    }
)
"""What the C functions that sleep are called in a ``py-spy --native`` stack. Without
``--native`` py-spy shows Python frames only: a ``time.sleep`` or a ``lock.acquire`` called
from a function outside the stdlib shows as that function and counts as work."""
LOOP_RUNNERS = ("asyncio/runners.py", "uvloop/")
"""Files whose frame, innermost, is a loop that runs no Python code: uvloop's loop is C, so a
uvloop worker idle in ``epoll_wait`` shows as its runner and nothing above it."""


def is_waiting(stack: str) -> bool:
    """Whether the thread was only waiting: its innermost frame blocks, and it waits neither
    for a pool connection (:func:`is_pool_wait`) nor for the database (:func:`is_database_call`).

    Those two are kept: a request stuck in ``QueuePool._do_get`` or waiting for its query's
    result is the time the page is about. Native frames (``--native``) under the innermost
    Python frame are read too: ``epoll_wait`` there is a wait whatever called it.

    >>> is_waiting(
    ...     "Thread._bootstrap (threading.py:1002);WorkerThread.run (anyio/_backends/_asyncio.py:"
    ...     "1113);Queue.get (queue.py:171);Condition.wait (threading.py:327)"
    ... )
    True
    >>> is_waiting(
    ...     "run_forever (asyncio/base_events.py:607);BaseEventLoop._run_once "
    ...     "(asyncio/base_events.py:1884);EpollSelector.select (selectors.py:468)"
    ... )
    True
    >>> is_waiting(
    ...     "authenticate (app/auth.py:72);QueuePool._do_get (sqlalchemy/pool/impl.py:155);"
    ...     "Queue.get (sqlalchemy/util/queue.py:199);Condition.wait (threading.py:331)"
    ... )
    False
    >>> is_waiting("handler (app.py:3);json_dumps (app/render.py:12)")
    False
    """
    labels = stack_frames(stack)
    if not _blocks(labels):
        return False
    return not is_pool_wait(stack) and not is_database_call(stack)


def work_only(stacks: Mapping[str, int]) -> tuple[Counter[str], int]:
    """The stacks that are not :func:`is_waiting`, and the samples left out with the others.

    >>> work, waiting = work_only({"a (app.py:1);Event.wait (threading.py:629)": 9,
    ...                            "a (app.py:1);b (app.py:2)": 1})
    >>> dict(work), waiting
    ({'a (app.py:1);b (app.py:2)': 1}, 9)
    """
    work: Counter[str] = Counter()
    waiting = 0
    for stack, count in stacks.items():
        if count <= 0:
            continue
        if is_waiting(stack):
            waiting += count
        else:
            work[stack] += count
    return work, waiting


def _blocks(labels: list[str]) -> bool:
    """Whether the innermost frames sleep: a native sleep under the innermost Python frame,
    or that Python frame itself one of :data:`BLOCKING_PYTHON` or a loop's runner."""
    for label in reversed(labels):
        if not _is_native(label):
            return _is_blocking_python(label)
        if _is_blocking_native(label):
            return True
    return False


@lru_cache(maxsize=4096)
def _is_native(label: str) -> bool:
    file = split_label(label).file
    return not (file.endswith(".py") or file.startswith("<") or file.endswith(".pyx"))


@lru_cache(maxsize=4096)
def _is_blocking_native(label: str) -> bool:
    return split_label(label).name in BLOCKING_NATIVE


@lru_cache(maxsize=4096)
def _is_blocking_python(label: str) -> bool:
    name, file, _ = split_label(label)
    path = file.replace("\\", "/")
    method = name.rsplit(".", 1)[-1]
    for module, methods in BLOCKING_PYTHON.items():
        if method in methods and _is_stdlib(path, module):
            return True
    return any(runner in path or path.startswith(runner) for runner in LOOP_RUNNERS)


def _is_stdlib(path: str, module: str) -> bool:
    """Whether ``path`` is the stdlib's ``module``: py-spy prints stdlib files relative to the
    interpreter's library (``queue.py``), else in full; ``sqlalchemy/util/queue.py`` is not it.

    >>> [_is_stdlib(p, "queue.py") for p in ("queue.py", "/usr/lib/python3.12/queue.py",
    ...                                      "sqlalchemy/util/queue.py")]
    [True, True, False]
    """
    absolute = path.startswith("/") or path[1:3] == ":/"
    return path == module or (absolute and path.endswith("/" + module))
