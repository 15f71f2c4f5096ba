"""The asyncio task sampler that runs *inside* a worker: stdlib only, sent as source text.

py-spy reads threads; a request coroutine suspended at ``await http.post(...)``
is on no thread's stack, even while it holds a database connection. This
module is injected into the live worker (see :mod:`profiler.capture.task_inject`):
its whole source text plus one ``start(...)`` line is compiled and run there,
so it must import nothing but the standard library, define no dataclasses
(they need the module in ``sys.modules``) and read no ``__name__``.

:func:`start` opens the output file and returns at once; a daemon thread then
samples every ``interval`` seconds. One round:

* copies asyncio's registry of live tasks (a ``WeakSet`` that the event loop
  thread may change meanwhile: copied with retries, as ``asyncio.all_tasks``
  does) and drops the copy at the end of the round: no task, frame or local
  outlives its round;
* walks each task's suspended coroutine chain (``cr_await`` /
  ``gi_yieldfrom`` / ``ag_await``) and records its frames, innermost first;
* looks for open PostgreSQL connections among the locals of those frames
  with a bounded breadth-first walk, and records their backend PIDs and the
  local port of each one's client socket (``ports``: behind PgBouncer the
  backend PID a client sees is the pooler's cancel key, never a PostgreSQL
  backend's, and the port is what the session joins on instead); and who
  holds each (``openers``): a frame whose own locals hold a session, or a
  generator entered on an exit stack of the chain (FastAPI's yield
  dependencies), read without a walk;
* reads the worker's SQLAlchemy connection pools (found with one pass over
  :func:`gc.get_objects`, then held by weak reference): class, size, max
  overflow, timeout, connections checked out and threads or tasks waiting for
  one, from plain instance data (no pool method runs, no lock is taken).

Locals are read with :func:`gc.get_referents` on the suspended coroutine,
which is what the garbage collector itself does: unlike ``frame.f_locals``
on 3.11/3.12 it creates no snapshot dict on the frame (that dict would keep
every local alive until the frame's next refresh, and it is the very dict
``locals()`` returns to the application). Nothing is written into the worker
but this thread, its output file and, for each sampled coroutine, the frame
object CPython creates lazily when ``cr_frame`` is first read (asyncio's
own ``Task.get_stack`` does the same).

Only attributes known to be plain data are read: an instance's ``__dict__``
(through the type's own descriptor), ``__slots__`` members, and for the few
recognised connection types (SQLAlchemy, psycopg 3, psycopg2, asyncpg) the
properties that read libpq's or asyncpg's local state without a round trip.
Never a property or ``__getattr__`` of an unknown object.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import socket
import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable
from typing import IO, Any

FORMAT = "profiler-task-samples"
VERSION = 1
THREAD_NAME = "profiler-task-sampler"
STOP_SUFFIX = ".stop"
LEASE_SUFFIX = ".lease"
MAX_FRAMES = 200  # per coroutine chain
MAX_DEPTH = 3  # from a frame's locals
MAX_VISITS = 300  # objects looked at per task
MAX_CONTAINER = 1000  # larger containers are not looked into
MAX_HOPS = 6  # Session -> transaction -> Connection -> pool proxy -> adapter -> driver
COPY_RETRIES = 100
POOL_RESCAN_SECONDS = 10.0  # while no pool is known, look again this often
POOL_REFRESH_SECONDS = 120.0  # and for engines created later, this often
SHUTDOWN_JOIN_SECONDS = 1.0
MAX_PORTS_CACHED = 4096  # client-socket ports remembered, by connection

_ATOMIC = (str, bytes, bytearray, int, float, complex, bool, type(None), range, memoryview)
_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.FrameType,
    types.CodeType,
    types.CoroutineType,
    types.GeneratorType,
    types.AsyncGeneratorType,
    types.TracebackType,
)

# (module prefix, class name) found in a type's MRO -> what the object is.
_KINDS = {
    ("sqlalchemy.orm.session", "Session"): "sa_session",
    ("sqlalchemy.ext.asyncio.session", "AsyncSession"): "sa_async_session",
    ("sqlalchemy.ext.asyncio.engine", "AsyncConnection"): "sa_async_connection",
    ("sqlalchemy.engine.base", "Connection"): "sa_connection",
    ("sqlalchemy.pool.base", "PoolProxiedConnection"): "sa_pool_proxy",
    ("sqlalchemy.connectors.asyncio", "AsyncAdapt_dbapi_connection"): "sa_adapter",
    ("sqlalchemy.dialects.postgresql.asyncpg", "AsyncAdapt_asyncpg_connection"): "sa_adapter",
    ("sqlalchemy.dialects.postgresql.psycopg", "AsyncAdapt_psycopg_connection"): "sa_adapter",
    ("psycopg.", "BaseConnection"): "psycopg",
    ("psycopg2", "connection"): "psycopg2",
    ("asyncpg.connection", "Connection"): "asyncpg",
    ("asyncpg.pool", "PoolConnectionProxy"): "asyncpg_proxy",
    # Pools and engines reach every idle connection: never attribute those to a task.
    ("sqlalchemy.engine.base", "Engine"): "skip",
    ("sqlalchemy.ext.asyncio.engine", "AsyncEngine"): "skip",
    ("sqlalchemy.pool.base", "Pool"): "skip",
    ("psycopg_pool.", "BasePool"): "skip",
    ("asyncpg.pool", "Pool"): "skip",
    # A result keeps its DBAPI cursor (and its execution context's), which reaches the
    # driver connection after the Session gave it back to the pool: held is the holders' say.
    ("sqlalchemy.engine.cursor", "CursorResult"): "skip",
    # Likewise a driver's cursors and prepared statements: they outlive the checkout.
    ("psycopg.", "BaseCursor"): "skip",
    ("psycopg2", "cursor"): "skip",
    ("asyncpg.connresource", "ConnectionResource"): "skip",
    ("asyncio.futures", "Future"): "skip",
    ("_asyncio", "Future"): "skip",
    ("asyncio.events", "AbstractEventLoop"): "skip",
    ("threading", "Thread"): "skip",
}


def start(
    path: str,
    interval: float,
    duration: float,
    max_tasks: int = 500,
    lease_seconds: float | None = None,
) -> threading.Thread:
    """Open ``path`` (exclusively), write the header and start sampling in a daemon thread.

    The sampler stops by itself after ``duration`` seconds, when ``path + ".stop"``
    appears, at interpreter exit, or (with ``lease_seconds``) when ``path + ".lease"``
    exists and was last touched longer ago than that: the host renews the lease
    while it lives, so a host that died stops the sampler long before its duration.

    Returns at once: the injected code runs with the GIL held in the worker.
    A failure to open the file raises here, so the injector gets it back as
    the payload's error text; after that nothing raises into the worker: the
    thread records any error in its ``end`` line.
    """
    handle = open(path, "x", encoding="utf-8")  # noqa: SIM115 (the thread closes it)
    try:
        header = {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "pid": os.getpid(),
            "interval": interval,
            "duration": duration,
            "max_tasks": max_tasks,
            "lease_seconds": lease_seconds,
            "python": sys.version.split()[0],
            "task_registry": _registry_name(),
            "sys_path": [entry for entry in sys.path if isinstance(entry, str)],
            "started_at": time.time(),
        }
        handle.write(json.dumps(header) + "\n")
        handle.flush()
        stop = threading.Event()
        hooks: list[Callable[[], None]] = []
        thread = threading.Thread(
            target=_run,
            args=(handle, path, interval, duration, max_tasks, lease_seconds, stop, hooks),
            name=THREAD_NAME,
            daemon=True,
        )

        def at_exit() -> None:
            """At interpreter exit: end the round in progress and write the end line."""
            stop.set()
            thread.join(SHUTDOWN_JOIN_SECONDS)

        hooks.append(at_exit)
        atexit.register(at_exit)
        thread.start()
    except BaseException:
        handle.close()
        raise
    return thread


def request_stop(path: str) -> None:
    """Ask the sampler writing ``path`` to stop at its next round (the host does the same)."""
    with open(path + STOP_SUFFIX, "a", encoding="utf-8"):
        pass


def _run(
    handle: IO[str],
    path: str,
    interval: float,
    duration: float,
    max_tasks: int,
    lease_seconds: float | None,
    stop: threading.Event,
    hooks: list[Callable[[], None]],
) -> None:
    """The sampling loop: rounds on a fixed-rate grid until duration, stop file or exit."""
    reason = "duration"
    try:
        began = time.monotonic()
        deadline = began + duration
        stop_file = path + STOP_SUFFIX
        pools = PoolWatch()
        tick = 0
        while True:
            if stop.is_set():
                reason = "shutdown"
                break
            if os.path.exists(stop_file):
                reason = "stopped"
                break
            if lease_seconds is not None and _lease_expired(path + LEASE_SUFFIX, lease_seconds):
                reason = "lease expired"
                break
            if time.monotonic() >= deadline:
                break
            handle.write(pools.line())
            handle.write(sample_round(max_tasks))
            handle.flush()
            tick += 1
            tick = max(tick, int((time.monotonic() - began) / interval) + 1)
            next_at = began + tick * interval
            stop.wait(max(0.0, min(next_at, deadline) - time.monotonic()))
    except BaseException as exc:  # nothing may escape into the worker
        reason = f"error: {type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(BaseException):
            end = {"kind": "end", "taken_at": time.time(), "reason": reason}
            handle.write(json.dumps(end) + "\n")
            handle.flush()
        with contextlib.suppress(BaseException):
            handle.close()
        for hook in hooks:
            atexit.unregister(hook)


def _lease_expired(lease: str, seconds: float) -> bool:
    try:
        return time.time() - os.stat(lease).st_mtime > seconds
    except OSError:  # no lease taken (yet): only the duration bounds the sampler
        return False


def sample_round(max_tasks: int) -> str:
    """One round as JSON lines: a ``task`` line per live task, then a ``round`` line.

    The ``round`` line's ``cpu_seconds`` is this thread's CPU time for the
    round: the sampler's cost, all of it spent holding the GIL. ``seconds`` is
    its wall time, longer when the worker's threads kept the GIL from it: the
    tasks of one round are then read over that span, not at ``taken_at``.
    """
    started = time.perf_counter()
    cpu_started = time.thread_time()
    taken_at = time.time()
    tasks = [task for task in _all_tasks() if not _done(task)]
    skipped = max(0, len(tasks) - max_tasks)
    del tasks[max_tasks:]
    lines = []
    cache: dict[Any, Any] = {}
    for task in tasks:
        record = describe_task(task, cache)
        record["taken_at"] = taken_at
        lines.append(json.dumps(record))
    count = len(tasks)
    del tasks, cache
    summary = {
        "kind": "round",
        "taken_at": taken_at,
        "tasks": count,
        "skipped": skipped,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.thread_time() - cpu_started,
    }
    lines.append(json.dumps(summary))
    return "\n".join(lines) + "\n"


def describe_task(task: Any, cache: dict[Any, Any] | None = None) -> dict[str, Any]:
    """A task's record: name, frames innermost first, what it awaits, its backend PIDs
    and its connections' client-socket ports (TCP only: a Unix socket has none)."""
    cache = {} if cache is None else cache
    coro = task.get_coro()
    frames, holders, last = walk_chain(coro)
    running = any(_running(holder) for holder in holders)
    roots = [] if running else locals_of(holders)
    backends, ports = find_connections(roots, cache) if roots else ([], [])
    return {
        "kind": "task",
        "task_id": id(task),
        "task": str(task.get_name()),
        "frames": frames,
        "awaiting": _awaiting(last, getattr(task, "_fut_waiter", None)),
        "running": running,
        "backends": backends,
        "ports": ports,
        "endpoint": find_endpoint(roots),
        "openers": [] if running else find_openers(holders, cache),
    }


def find_endpoint(roots: list[Any]) -> dict[str, Any] | None:
    """The web endpoint the task serves, from the ASGI ``scope`` among its frames' locals.

    Starlette's router (and so FastAPI's) puts the matched route's function in
    ``scope["endpoint"]`` and the route in ``scope["route"]``. A request that
    holds a connection while still resolving its dependencies has no frame of
    its handler yet; the endpoint says whose request it is all the same.
    Only plain dicts are looked into (``dict.get`` runs no user code).
    """
    for root in roots:
        if type(root) is not dict or root.get("type") not in ("http", "websocket"):
            continue
        endpoint = root.get("endpoint")
        code = getattr(endpoint, "__code__", None)
        if code is None:
            continue
        route = root.get("route")
        path = route.__dict__.get("path") if hasattr(route, "__dict__") else None
        return {
            "request": id(root),  # the tasks of one request (a middleware's call_next) share it
            "name": getattr(code, "co_qualname", code.co_name),
            "filename": code.co_filename,
            "line": code.co_firstlineno,
            "method": root.get("method"),
            "route": path if isinstance(path, str) else root.get("path"),
        }
    return None


def walk_chain(coro: Any) -> tuple[list[list[Any]], list[Any], Any]:
    """Follow a coroutine's ``await`` chain: frames innermost first, the coroutines and
    generators walked (outermost first), and the object the chain ended on (a Future's
    iterator, an unknown awaitable, or None).

    An ``async with`` over an ``@asynccontextmanager`` (FastAPI's yield dependencies,
    Starlette's lifespans) awaits ``anext(gen)`` or ``gen.athrow(...)``: an
    ``async_generator_asend``/``athrow`` object with no attribute leading on. Its
    referents (read as the GC does) hold the generator, and the walk goes on into it,
    so the dependency that opened a session shows as a frame and its locals are read.
    """
    frames: list[list[Any]] = []
    holders: list[Any] = []
    current = coro
    for _ in range(MAX_FRAMES):
        step = _STEPS.get(type(current))
        if step is None:
            generator = _generator_awaited(current)
            if generator is None:
                break
            current = generator
            continue
        frame_attr, await_attr = step
        frame = getattr(current, frame_attr)
        if frame is None:  # finished or closed
            current = None
            break
        holders.append(current)
        frames.append(_frame_record(frame))
        current = getattr(current, await_attr)
    frames.reverse()
    return frames, holders, current


def find_backends(roots: list[Any], cache: dict[Any, Any] | None = None) -> list[int]:
    """Backend PIDs of the open connections reachable from ``roots`` (see
    :func:`find_connections`)."""
    return find_connections(roots, cache)[0]


def find_connections(
    roots: list[Any], cache: dict[Any, Any] | None = None
) -> tuple[list[int], list[int]]:
    """Backend PIDs of the open connections reachable from ``roots`` (a frame's locals),
    and the local ports of their TCP client sockets (see :func:`client_port`).

    Breadth first, depth at most ``MAX_DEPTH``, at most ``MAX_VISITS``
    objects, each once; containers and plain objects are looked into, the
    recognised connection holders are resolved and not looked into further.
    """
    cache = {} if cache is None else cache
    found: list[tuple[int, int | None]] = []
    seen: set[int] = set()
    visits = 0
    level = roots
    for depth in range(MAX_DEPTH + 1):
        deeper: list[Any] = []
        for obj in level:
            tp = type(obj)
            if tp in _ATOMIC or id(obj) in seen:
                continue
            if visits >= MAX_VISITS:
                return _split(found)
            seen.add(id(obj))
            visits += 1
            kind = _kind(tp, cache)
            if kind == "skip":
                continue
            if kind is not None:
                with contextlib.suppress(Exception):
                    _resolve(obj, kind, found, cache, MAX_HOPS)
                continue
            if depth < MAX_DEPTH:
                with contextlib.suppress(Exception):
                    deeper.extend(_children(obj, tp, cache))
        level = deeper
    return _split(found)


def _split(found: list[tuple[int, int | None]]) -> tuple[list[int], list[int]]:
    pids = sorted({pid for pid, _ in found if pid > 0})
    return pids, sorted({port for _, port in found if port is not None})


# Port of each connection's client socket, by (id(connection), backend pid, fd): read once
# per connection, not per round. A new connection at a recycled id has another backend pid
# (PgBouncer's cancel key is random) or fd; the dict is emptied when it grows past its bound.
_PORTS: dict[tuple[int, int, int], int | None] = {}


def client_port(connection: Any, backend_pid: int, fd: Any) -> int | None:
    """The local port of the TCP socket ``fd`` (a driver connection's, not ours: read through
    a duplicate, which is closed), cached; None for a Unix socket or anything unreadable."""
    if type(fd) is not int or fd < 0:
        return None
    key = (id(connection), backend_pid, fd)
    if key in _PORTS:
        return _PORTS[key]
    port = None
    with contextlib.suppress(OSError, ValueError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            port = _port_of(sock.getsockname())
        finally:
            sock.close()
    if len(_PORTS) >= MAX_PORTS_CACHED:
        _PORTS.clear()
    _PORTS[key] = port
    return port


def _port_of(address: Any) -> int | None:
    """The port of a ``getsockname()`` answer: an (address, port, ...) tuple for TCP."""
    if type(address) is tuple and len(address) >= 2 and type(address[1]) is int:
        return address[1] if address[1] > 0 else None
    return None  # a Unix socket's path


# -- who opened each connection ------------------------------------------------------------

MAX_OPENERS = 16  # opener records per task
_EXIT_STACKS = ("AsyncExitStack", "ExitStack", "_BaseExitStack")
_GENERATOR_CMS = ("_GeneratorContextManager", "_AsyncGeneratorContextManager")
_METHOD_SELF = types.MethodType.__dict__["__self__"]
_CODE_OF = {
    types.GeneratorType: types.GeneratorType.__dict__["gi_code"],
    types.AsyncGeneratorType: types.AsyncGeneratorType.__dict__["ag_code"],
    types.CoroutineType: types.CoroutineType.__dict__["cr_code"],
}


def find_openers(holders: list[Any], cache: dict[Any, Any] | None = None) -> list[list[Any]]:
    """Who holds each connection of a task: ``[backend, function, filename, line, via]``.

    ``via`` is ``frame`` for a session among a suspended frame's own locals (the
    frame's function: a handler, a middleware's ``dispatch``), ``dependency`` for one
    among the locals of a generator entered on an exit stack that such a frame holds
    (FastAPI's yield dependencies: ``get_db``, and the dependency that asked for it),
    in the order they were entered. Only the frames' own locals and exit stacks are
    looked at, so this costs a few objects per frame, not a walk.
    """
    cache = {} if cache is None else cache
    found: list[list[Any]] = []
    stacks: set[int] = set()  # an exit stack is a local of several frames: read it once
    for holder in holders:  # outermost first: a request's exit stacks before its handler
        code = _CODE_OF.get(type(holder))
        if code is None:
            continue
        where = code.__get__(holder, type(holder))
        for local in locals_of([holder]):
            if len(found) >= MAX_OPENERS:
                return found
            name = _TYPE_QUALNAME.__get__(type(local), type)
            if name in _EXIT_STACKS and _TYPE_MODULE.__get__(type(local), type) == "contextlib":
                if id(local) in stacks:
                    continue
                stacks.add(id(local))
                with contextlib.suppress(Exception):
                    _exit_stack_openers(local, found, cache)
                continue
            for pid in _connections_of(local, cache):
                found.append(
                    [pid, _code_name(where), where.co_filename, where.co_firstlineno, "frame"]
                )
    return found[:MAX_OPENERS]


def _exit_stack_openers(stack: Any, found: list[list[Any]], cache: dict[Any, Any]) -> None:
    callbacks = _plain(stack, "_exit_callbacks")
    if type(callbacks) is not deque:
        return
    for entry in list(callbacks)[:MAX_CONTAINER]:
        if type(entry) is not tuple or len(entry) != 2:
            continue
        callback = entry[1]
        if type(callback) is not types.MethodType:
            continue
        _generator_openers(_METHOD_SELF.__get__(callback), found, cache, 3)


def _generator_openers(cm: Any, found: list[list[Any]], cache: dict[Any, Any], hops: int) -> None:
    """A ``@contextmanager`` object's generator: the sessions among its locals, and (for
    a wrapper such as FastAPI's ``contextmanager_in_threadpool``) the generator it wraps."""
    if hops <= 0 or _TYPE_QUALNAME.__get__(type(cm), type) not in _GENERATOR_CMS:
        return
    generator = _plain(cm, "gen")
    code = _CODE_OF.get(type(generator))
    if code is None:
        return
    where = code.__get__(generator, type(generator))
    for local in locals_of([generator]):
        if _TYPE_QUALNAME.__get__(type(local), type) in _GENERATOR_CMS:
            _generator_openers(local, found, cache, hops - 1)
            continue
        for pid in _connections_of(local, cache):
            found.append(
                [pid, _code_name(where), where.co_filename, where.co_firstlineno, "dependency"]
            )


def _connections_of(obj: Any, cache: dict[Any, Any]) -> list[int]:
    kind = _kind(type(obj), cache)
    if kind in (None, "skip"):
        return []
    found: list[tuple[int, int | None]] = []  # (backend PID, client port), as _resolve finds
    with contextlib.suppress(Exception):
        _resolve(obj, kind, found, cache, MAX_HOPS)
    return sorted({pid for pid, _ in found})


def _code_name(code: types.CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))


# -- pools -------------------------------------------------------------------------------


class PoolWatch:
    """The worker's SQLAlchemy pools, found once and read every round.

    Finding them costs one pass over :func:`gc.get_objects` (tens of
    milliseconds per million objects, with the GIL held), so it is done at the
    first round, again every :data:`POOL_RESCAN_SECONDS` while none is found
    (an engine created on the first request) and every
    :data:`POOL_REFRESH_SECONDS` after that. Pools are kept by weak reference:
    a disposed engine's pool is not kept alive by the sampler.
    """

    def __init__(self) -> None:
        self.refs: list[Any] = []
        self.scanned_at: float | None = None
        self.scan_seconds = 0.0

    def line(self) -> str:
        """A ``pools`` JSON line: every pool alive and its figures now."""
        now = time.monotonic()
        alive = [pool for pool in (ref() for ref in self.refs) if pool is not None]
        wait = POOL_REFRESH_SECONDS if alive else POOL_RESCAN_SECONDS
        if self.scanned_at is None or now - self.scanned_at >= wait:
            started = time.perf_counter()
            alive = find_pools()
            self.refs = [weakref.ref(pool) for pool in alive]
            self.scanned_at = now
            self.scan_seconds = time.perf_counter() - started
        record = {
            "kind": "pools",
            "taken_at": time.time(),
            "pools": [pool_figures(pool) for pool in alive],
            "scan_seconds": self.scan_seconds,
        }
        del alive
        return json.dumps(record) + "\n"


def find_pools() -> list[Any]:
    """Every SQLAlchemy connection pool alive in this process (none when SQLAlchemy is not
    imported). Types are told by their MRO, read through ``type``'s own descriptor; no
    ``isinstance`` (it may ask an object's ``__class__``, which a proxy can compute)."""
    module = sys.modules.get("sqlalchemy.pool.base")
    base = module.__dict__.get("Pool") if module is not None else None
    if not isinstance(base, type):
        return []
    verdicts: dict[type, bool] = {}
    found = []
    for obj in gc.get_objects():
        tp = type(obj)
        verdict = verdicts.get(tp)
        if verdict is None:
            verdict = verdicts[tp] = base in _TYPE_MRO.__get__(tp, type)
        if verdict:
            with contextlib.suppress(TypeError):  # a pool that takes no weak reference
                weakref.ref(obj)
                found.append(obj)
    return found


def pool_figures(pool: Any) -> dict[str, Any]:
    """A pool's class and, for a queue pool, its figures, all from instance data:
    ``size`` (``pool_size``), ``max_overflow`` (-1: no limit), ``timeout``,
    ``checked_out`` (``size - idle in the queue + overflow``, SQLAlchemy's own
    ``checkedout()``) and ``waiting`` (threads or tasks waiting for a connection)."""
    tp = type(pool)
    record: dict[str, Any] = {
        "id": id(pool),
        "class": _TYPE_QUALNAME.__get__(tp, type),
        "size": None,
        "max_overflow": None,
        "timeout": None,
        "checked_out": None,
        "waiting": None,
    }
    timeout = _plain(pool, "_timeout")
    if type(timeout) in (int, float):
        record["timeout"] = timeout
    max_overflow = _plain(pool, "_max_overflow")
    overflow = _plain(pool, "_overflow")
    queue = _plain(pool, "_pool")
    if queue is None or type(max_overflow) is not int:
        return record
    size = _plain(queue, "maxsize")
    if type(size) is not int:
        return record
    record["size"], record["max_overflow"] = size, max_overflow
    idle, waiting = _queue_state(queue)
    if idle is not None and type(overflow) is int:
        record["checked_out"] = size - idle + overflow
    record["waiting"] = waiting
    return record


def _queue_state(queue: Any) -> tuple[int | None, int | None]:
    """Connections idle in a pool's queue and waiters for one: a thread queue's deque and
    its condition's waiters, or an asyncio queue's (created on first use: none yet is 0)."""
    items = _plain(queue, "queue")
    if type(items) is deque:  # sqlalchemy.util.queue.Queue
        condition = _plain(queue, "not_empty")
        waiters = _plain(condition, "_waiters") if condition is not None else None
        return len(items), len(waiters) if type(waiters) is deque else None
    inner = _plain(queue, "_queue")  # AsyncAdaptedQueue: an asyncio.Queue, made lazily
    if inner is None:
        return 0, 0
    items, getters = _plain(inner, "_queue"), _plain(inner, "_getters")
    if type(items) is not deque:
        return None, None
    return len(items), len(getters) if type(getters) is deque else None


# -- tasks -------------------------------------------------------------------------------


def _registry() -> list[Any]:
    """asyncio's sets of live tasks in this Python (3.10-3.11: one; 3.12+: two)."""
    module = sys.modules.get("asyncio.tasks")
    if module is None or sys.version_info >= (3, 14):
        return []  # asyncio never imported; or 3.14's per-thread lists, unreadable from here
    found = []
    for name in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        registry = module.__dict__.get(name)
        if registry is not None:
            found.append(registry)
    return found


def _registry_name() -> str | None:
    module = sys.modules.get("asyncio.tasks")
    if module is None:
        return "asyncio not imported"
    if sys.version_info >= (3, 14):  # its Python-level sets exist but stay empty
        return "none: Python 3.14+ keeps tasks in per-thread lists"
    names = [n for n in ("_all_tasks", "_scheduled_tasks", "_eager_tasks") if n in module.__dict__]
    return "+".join(names) or None


def _all_tasks() -> list[Any]:
    """A copy of every registered task; the loop thread may add one meanwhile, so retry."""
    tasks: list[Any] = []
    for registry in _registry():
        for attempt in range(COPY_RETRIES):
            try:
                tasks.extend(list(registry))
                break
            except RuntimeError:  # changed size during iteration
                if attempt == COPY_RETRIES - 1:
                    raise
    return list({id(task): task for task in tasks}.values())


def _done(task: Any) -> bool:
    try:
        return bool(task.done())
    except Exception:  # a foreign task type: treat it as gone
        return True


_STEPS: dict[type, tuple[str, str]] = {
    types.CoroutineType: ("cr_frame", "cr_await"),
    types.GeneratorType: ("gi_frame", "gi_yieldfrom"),
    types.AsyncGeneratorType: ("ag_frame", "ag_await"),
}
_RUNNING = {
    types.CoroutineType: "cr_running",
    types.GeneratorType: "gi_running",
    types.AsyncGeneratorType: "ag_running",
}


_AWAITING_GENERATOR = ("async_generator_asend", "async_generator_athrow")


def _generator_awaited(obj: Any) -> Any:
    """The async generator an ``asend``/``athrow`` awaitable drives, or None."""
    if obj is None or _TYPE_QUALNAME.__get__(type(obj), type) not in _AWAITING_GENERATOR:
        return None
    for ref in gc.get_referents(obj):
        if type(ref) is types.AsyncGeneratorType:
            return ref
    return None


def _running(holder: Any) -> bool:
    """Whether ``holder`` executes on a thread right now (its locals then change under us).

    An async generator's ``ag_running`` is also true while it is suspended in an ``await``
    of its body (driven by an ``asend`` its caller awaits): that says nothing, and the
    coroutines of the same chain tell whether the chain runs.
    """
    if type(holder) is types.AsyncGeneratorType:
        return False
    return bool(getattr(holder, _RUNNING[type(holder)]))


def _frame_record(frame: types.FrameType) -> list[Any]:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    return [name, code.co_filename, frame.f_lineno or 0]


def _awaiting(last: Any, waiter: Any) -> str | None:
    """What the innermost coroutine waits on, by type name (a Future rather than its
    iterator)."""
    if last is None:
        return None
    if waiter is not None:
        return type(waiter).__name__
    name = type(last).__name__
    return "Future" if name == "FutureIter" else name


def locals_of(holders: list[Any]) -> list[Any]:
    """The locals (and value stacks) of suspended frames, innermost first, read as the GC
    reads them.

    On 3.11+ a coroutine owns its frame's data and its referents are its
    locals; on 3.10 they include its frame object, whose referents are the
    locals plus the module's globals and builtins, which are left out.
    Innermost first: the application's own frames, where sessions live, come
    before the framework's when the visit budget runs out.
    """
    walked = {id(holder) for holder in holders}
    roots: list[Any] = []
    for holder in reversed(holders):
        for ref in gc.get_referents(holder):
            if type(ref) is types.FrameType:
                skip = {id(ref.f_globals), id(ref.f_builtins), *walked}
                roots.extend(r for r in gc.get_referents(ref) if id(r) not in skip)
            elif id(ref) not in walked:
                roots.append(ref)
    return roots


# -- the bounded walk ----------------------------------------------------------------------

_MISSING = object()
_TYPE_MODULE = type.__dict__["__module__"]
_TYPE_QUALNAME = type.__dict__["__qualname__"]
_TYPE_MRO = type.__dict__["__mro__"]


def _kind(tp: type, cache: dict[Any, Any]) -> str | None:
    """What a type is to the walk: a connection holder's kind, ``skip``, or None (look in).

    Names are read through ``type``'s own descriptors: a metaclass cannot run code here.
    """
    key = ("kind", tp)
    if key in cache:
        return cache[key]  # type: ignore[no-any-return]
    kind: str | None = None
    if issubclass(tp, _OPAQUE):
        kind = "skip"
    else:
        for klass in tp.__mro__:
            module = _TYPE_MODULE.__get__(klass, type)
            name = _TYPE_QUALNAME.__get__(klass, type)
            if not isinstance(module, str):
                continue
            for (prefix, wanted), found in _KINDS.items():
                if name == wanted and module.startswith(prefix):
                    kind = found
                    break
            if kind is not None:
                break
    cache[key] = kind
    return kind


def _layout(tp: type, cache: dict[Any, Any]) -> list[Any]:
    """The descriptors of a type's instance data: its ``__dict__`` getset and its slots."""
    key = ("layout", tp)
    if key in cache:
        return cache[key]  # type: ignore[no-any-return]
    layout: list[Any] = []
    has_dict = False
    for klass in tp.__mro__:
        for name, descriptor in list(klass.__dict__.items()):
            kind = type(descriptor)
            if name == "__dict__" and kind is types.GetSetDescriptorType and not has_dict:
                layout.append(descriptor)
                has_dict = True
            elif kind is types.MemberDescriptorType and name != "__weakref__":
                layout.append(descriptor)
    cache[key] = layout
    return layout


def _children(obj: Any, tp: type, cache: dict[Any, Any]) -> list[Any]:
    """What a container holds, or an object's instance attributes; never through its code."""
    items = _items(obj, tp)
    if items is not None:
        return items
    values: list[Any] = []
    for descriptor in _layout(tp, cache):
        try:
            value = descriptor.__get__(obj, tp)
        except (AttributeError, TypeError):
            continue  # an unset slot, or no instance dict after all
        if type(descriptor) is types.MemberDescriptorType:
            values.append(value)
        elif type(value) is dict and len(value) <= MAX_CONTAINER:
            values.extend(dict.values(value))
    return values


def _items(obj: Any, tp: type) -> list[Any] | None:
    """A built-in container's items through the built-in's own methods (a subclass's
    ``__iter__`` is code), or None when ``obj`` is not one. Large ones are sized first."""
    for base in (dict, list, tuple, set, frozenset):
        if issubclass(tp, base):
            if base.__len__(obj) > MAX_CONTAINER:
                return []  # too large: looked at, not into
            return list(dict.values(obj)) if base is dict else list(base.__iter__(obj))
    if tp is types.CellType:
        try:
            return [obj.cell_contents]
        except ValueError:  # an empty cell
            return []
    return None


def _plain(obj: Any, name: str, missing: Any = None) -> Any:
    """``obj.name`` when it is instance data (a slot or the instance ``__dict__``), else
    ``missing``: a property or any other data descriptor is code, and is not run."""
    tp = type(obj)
    declared: Any = _MISSING
    for klass in tp.__mro__:
        declared = klass.__dict__.get(name, _MISSING)
        if declared is not _MISSING:
            break
    if type(declared) is types.MemberDescriptorType:
        try:
            return declared.__get__(obj, tp)
        except AttributeError:
            return missing
    if declared is not _MISSING and (
        hasattr(type(declared), "__set__") or hasattr(type(declared), "__delete__")
    ):
        return missing
    for klass in tp.__mro__:
        descriptor = klass.__dict__.get("__dict__")
        if type(descriptor) is types.GetSetDescriptorType:
            attributes = descriptor.__get__(obj, tp)
            return attributes.get(name, missing) if type(attributes) is dict else missing
    return missing


def _resolve(
    obj: Any, kind: str, found: list[tuple[int, int | None]], cache: dict[Any, Any], hops: int
) -> None:
    """Follow a recognised connection holder down to its driver connection's backend PID."""
    if hops <= 0 or obj is None:
        return

    def follow(target: Any) -> None:
        if target is None:
            return
        target_kind = _kind(type(target), cache)
        if target_kind not in (None, "skip"):
            _resolve(target, target_kind, found, cache, hops - 1)

    handler = _RESOLVERS.get(kind)
    if handler is not None:
        handler(obj, found, follow)


def _session(obj: Any, found: list[tuple[int, int | None]], follow: Callable[[Any], None]) -> None:
    transaction = _plain(obj, "_transaction")
    for _ in range(MAX_HOPS):
        if transaction is None:
            return
        connections = _plain(transaction, "_connections")
        if type(connections) is dict:
            for entry in list(connections.values()):
                if type(entry) is tuple and entry:
                    follow(entry[0])
        transaction = _plain(transaction, "_parent")


def _pid(found: list[tuple[int, int | None]], value: Any, port: Any = None) -> None:
    """Record an open connection: its backend PID when it can be one (PgBouncer's cancel
    key, which a client sees instead, is random and half the time negative), its port
    whenever known."""
    if type(value) is not int:
        return
    found.append((value if value > 0 else 0, port if type(port) is int else None))


def _psycopg(obj: Any, found: list[tuple[int, int | None]], follow: Callable[[Any], None]) -> None:
    if _plain(obj, "_pool", _MISSING) is None:
        # psycopg_pool sets _pool on the connections it makes: the pool while checked out,
        # None once given back (open, and the pool's). A connection of no pool has none.
        return
    if not obj.closed:  # libpq's status, no round trip
        pid = obj.info.backend_pid  # PQbackendPID: local
        _pid(found, pid, _guarded_port(obj, pid, lambda: obj.pgconn.socket))  # PQsocket


def _psycopg2(obj: Any, found: list[tuple[int, int | None]], follow: Callable[[Any], None]) -> None:
    if not obj.closed:
        pid = obj.get_backend_pid()  # PQbackendPID: local
        _pid(found, pid, _guarded_port(obj, pid, obj.fileno))  # PQsocket: local


def _asyncpg(obj: Any, found: list[tuple[int, int | None]], follow: Callable[[Any], None]) -> None:
    if not obj.is_closed():
        pid = obj.get_server_pid()  # from the startup message: local
        _pid(found, pid, _asyncpg_port(obj, pid))


def _guarded_port(obj: Any, pid: Any, fd: Callable[[], Any]) -> int | None:
    """:func:`client_port` of the descriptor ``fd()`` gives; None when the driver refuses
    it (a broken connection): the backend PID is recorded all the same."""
    try:
        return client_port(obj, pid, fd())
    except Exception:
        return None


def _asyncpg_port(obj: Any, pid: Any) -> int | None:
    """The port of an asyncpg connection's socket: its transport's ``sockname``, cached."""
    key = (id(obj), pid, -1)
    if key in _PORTS:
        return _PORTS[key]
    transport = _plain(obj, "_transport")
    port = None
    if transport is not None:
        with contextlib.suppress(Exception):
            port = _port_of(transport.get_extra_info("sockname"))
    if len(_PORTS) >= MAX_PORTS_CACHED:
        _PORTS.clear()
    _PORTS[key] = port
    return port


_RESOLVERS: dict[
    str, Callable[[Any, list[tuple[int, int | None]], Callable[[Any], None]], None]
] = {
    "sa_session": _session,
    "sa_async_session": lambda obj, found, follow: follow(_plain(obj, "sync_session")),
    "sa_async_connection": lambda obj, found, follow: follow(_plain(obj, "sync_connection")),
    "sa_connection": lambda obj, found, follow: follow(_plain(obj, "_dbapi_connection")),
    "sa_pool_proxy": lambda obj, found, follow: follow(_plain(obj, "dbapi_connection")),
    "sa_adapter": lambda obj, found, follow: follow(_plain(obj, "_connection")),
    "asyncpg_proxy": lambda obj, found, follow: follow(_plain(obj, "_con")),
    "psycopg": _psycopg,
    "psycopg2": _psycopg2,
    "asyncpg": _asyncpg,
}
