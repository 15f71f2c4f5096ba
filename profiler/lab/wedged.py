"""The lab wedged the way real gateways wedge, for attach tests and ``attach_latency``.

Held mode with the default ``pool_timeout`` (30 s), a small pool and a slow
downstream, overloaded: a request that finds the pool empty blocks its
worker's event loop in ``QueuePool._do_get`` (``Condition.wait``) while the
requests that hold the connections wait on that same loop for their
downstream reply. Nothing moves until the 30 s timeout: the loop thread sleeps
in a futex, AnyIO's idle threads in ``Queue.get``, and memray's breakpoint
route (which waits for a thread to allocate) waits with them.

The same lab under light load (``HEALTHY_USERS``, below what the pool holds)
is the healthy state, and with no load the idle one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from profiler.lab.lifecycle import LabOptions, down, up, worker_pids

__all__ = ["asleep", "lab", "load", "options", "worker_pids"]
from profiler.lab.load import run_load
from profiler.lab.state import LabState

POOL_SIZE = 4  # a request holds two connections (handler and auth): two requests per worker
OVERLOAD_USERS = 40
HEALTHY_USERS = 2
LOAD_SECONDS = 600.0


def options(port: int, dsn: str, workers: int) -> LabOptions:
    """Held mode, default pool_timeout, no overflow, 1 s downstream."""
    return LabOptions(
        mode="held",
        workers=workers,
        pool_size=POOL_SIZE,
        max_overflow=0,
        pool_timeout=30.0,
        downstream_latency=1.0,
        port=port,
        dsn=dsn,
    )


@contextlib.contextmanager
def lab(workers: int = 2, dsn: str | None = None) -> Iterator[tuple[LabState, list[int]]]:
    """A held-mode lab on ``dsn`` (None: a throwaway PostgreSQL); its worker PIDs.
    Everything it started is stopped by PID after."""
    from profiler.pg import embedded

    server = embedded.start() if dsn is None else None
    previous = os.environ.get("PROFILER_STATE_DIR")
    os.environ["PROFILER_STATE_DIR"] = tempfile.mkdtemp(prefix="profiler-wedged-state-")
    try:
        state = up(options(embedded.free_port(), server.dsn if server else str(dsn), workers))
        try:
            assert state.master is not None
            yield state, worker_pids(state.master.pid)
        finally:
            down()
    finally:
        if server is not None:
            embedded.stop(server.pgdata, pid=server.pid, remove=True)
        if previous is None:
            os.environ.pop("PROFILER_STATE_DIR", None)
        else:
            os.environ["PROFILER_STATE_DIR"] = previous


@contextlib.contextmanager
def load(url: str, users: int, seconds: float = LOAD_SECONDS) -> Iterator[None]:
    """``users`` on the gateway from a background thread for ``seconds``; leaving the block
    waits for the load to end (pick ``seconds`` to cover the block)."""
    thread = threading.Thread(
        target=run_load,
        args=(url,),
        kwargs={"users": users, "seconds": seconds, "request_timeout": 5.0},
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        thread.join(seconds + 40)


def asleep(pid: int) -> bool:
    """Every thread of ``pid`` sleeps (state S), the main one in a futex (the loop blocked
    in a checkout) or in epoll (the loop idle while every AnyIO thread waits for the
    pool): under overload, that is wedged."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = [_state(pid, int(tid)) for tid in tasks]
        main_syscall = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()[0]
    except OSError:
        return False
    return all(state == "S" for state in states) and main_syscall in ("202", "232", "281")


def _state(pid: int, tid: int) -> str:
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]
