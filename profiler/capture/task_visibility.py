"""Where the asyncio task sampler is blind, said before and after sampling, never as a silent 0.

The sampler reads asyncio's registry of live tasks. Every loop that makes its
tasks with ``asyncio.Task`` fills it: asyncio's own, uvloop, granian's
``--loop asyncio|uvloop|rloop`` with its default ``--task-impl asyncio``. Two
cases leave it empty while requests are being served: granian's
``--task-impl rust`` (its tasks are Rust objects asyncio never sees) and a
worker with no asyncio loop at all (a sync worker). The first is known from the
worker's command line and environment before anything is injected; the second
shows as rounds that all saw no task.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil

_RUST_TASKS_ARG = re.compile(r"--task-impl(?:=|\s+)rust\b")
_SERVER_ENV = "GRANIAN_TASK_IMPL"


def blind_spot(pid: int) -> str | None:
    """Why the sampler cannot see worker ``pid``'s tasks, known up front; None when it can."""
    try:
        proc = psutil.Process(pid)
        argv = " ".join(proc.cmdline())
        environ = proc.environ()
    except (psutil.Error, OSError):
        return None
    if "granian" not in argv:
        return None
    if _RUST_TASKS_ARG.search(argv) or (
        "--task-impl" not in argv and environ.get(_SERVER_ENV, "").lower() == "rust"
    ):
        return (
            "granian runs this worker's tasks in Rust (--task-impl rust / GRANIAN_TASK_IMPL): "
            "asyncio's task registry stays empty, so the task sampler cannot see them; "
            "run granian with --task-impl asyncio to sample tasks"
        )
    return None


def saw_no_task(path: Path) -> bool:
    """True when the sampler's file has rounds and none of them saw a task."""
    from profiler.capture import task_log

    try:
        rounds = task_log.read_rounds(path)
    except (OSError, ValueError):
        return False
    return len(rounds) > 0 and int(rounds["tasks"].sum()) == 0
