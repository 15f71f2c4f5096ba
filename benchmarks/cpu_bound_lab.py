"""The lab the overhead benchmarks measure: CPU-bound workers on a throwaway PostgreSQL.

Fresh mode (no deadlock), 2 gunicorn/uvicorn workers, a 5 ms downstream so the
workers, not the downstream, limit throughput: a profiler's cost then shows
up in requests per second. Imported by the benchmarks next to it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from profiler.lab.lifecycle import LabOptions, down, up, worker_pids
from profiler.lab.load import run_load
from profiler.lab.state import LabState
from profiler.pg import embedded


@contextlib.contextmanager
def cpu_bound_lab(users: int) -> Iterator[tuple[LabState, list[int]]]:
    """The running lab and its worker PIDs, warmed up; everything stopped by PID after."""
    server = embedded.start()
    os.environ["PROFILER_STATE_DIR"] = tempfile.mkdtemp(prefix="profiler-bench-state-")
    try:
        state = up(
            LabOptions(
                mode="fresh",
                workers=2,
                pool_size=10,
                max_overflow=10,
                downstream_latency=0.005,
                port=embedded.free_port(),
                dsn=server.dsn,
            )
        )
        try:
            assert state.master is not None
            run_load(state.url, users=users, seconds=3)  # warm the pools and caches
            yield state, worker_pids(state.master.pid)
        finally:
            down()
    finally:
        embedded.stop(server.pgdata, pid=server.pid, remove=True)
