"""How the lab gateway is served: gunicorn, granian or uvicorn, each as users run it.

The three run a master that starts N worker processes, but differently:
gunicorn forks ``UvicornWorker`` processes; ``uvicorn --workers N`` spawns
them through multiprocessing (their command line is ``python -c from
multiprocessing.spawn import spawn_main ...``, next to multiprocessing's
resource tracker, which serves nothing); granian's Python master forks
workers whose asyncio loop is driven from Rust threads. The app is the same
factory for all three. Granian is pinned to ``--loop asyncio``: the task
sampler reads asyncio's registry of tasks, which a Rust task implementation
does not fill (see docs/how-to/granian-and-uvicorn.md).
"""

from __future__ import annotations

import sys
from typing import Literal

import psutil

from profiler.targets.discovery import is_helper

Server = Literal["gunicorn", "granian", "uvicorn"]
SERVERS: tuple[Server, ...] = ("gunicorn", "granian", "uvicorn")
APP_MODULE = "profiler.lab.gateway.app"
GUNICORN_WORKER_CLASS = "uvicorn_worker.UvicornWorker"
GRANIAN_LOOP = "asyncio"
GRACE_SECONDS = 5


def command(server: Server, *, workers: int, host: str, port: int) -> list[str]:
    """The argv that serves the gateway with ``workers`` processes on ``host:port``."""
    python = sys.executable
    if server == "gunicorn":
        return [
            python,
            "-m",
            "gunicorn",
            f"{APP_MODULE}:create_app()",
            "--worker-class",
            GUNICORN_WORKER_CLASS,
            "--workers",
            str(workers),
            "--bind",
            f"{host}:{port}",
            "--timeout",
            "120",
            "--graceful-timeout",
            str(GRACE_SECONDS),
            "--log-level",
            "warning",
        ]
    # Each server's command line spelled out whole, as its docs show it: --workers, --host and
    # --port read alike in granian's and uvicorn's, but they are two CLIs' flags.
    if server == "granian":
        return [
            python,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--loop",
            GRANIAN_LOOP,
            "--workers",
            str(workers),
            "--host",
            host,
            "--port",
            str(port),
            "--workers-kill-timeout",
            str(GRACE_SECONDS),
            "--log-level",
            "warning",
            f"{APP_MODULE}:create_app",
        ]
    return [
        python,
        "-m",
        "uvicorn",
        "--factory",
        "--workers",
        str(workers),
        "--host",
        host,
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        str(GRACE_SECONDS),
        "--log-level",
        "warning",
        f"{APP_MODULE}:create_app",
    ]


def worker_pids(master_pid: int) -> list[int]:
    """The master's serving children: multiprocessing's resource tracker is not a worker."""
    try:
        children = psutil.Process(master_pid).children()
    except psutil.NoSuchProcess:
        return []
    return sorted(child.pid for child in children if not is_helper(child))
