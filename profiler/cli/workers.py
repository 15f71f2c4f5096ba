"""``profiler workers``: masters and workers, with the facts profiling needs."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from profiler import units
from profiler.cli import console
from profiler.cli.options import (
    JSON_OPTION,
    target_options,
)

if TYPE_CHECKING:
    from profiler.model import Worker
    from profiler.targets.discovery import TargetSpec

CMDLINE_WIDTH = 60
# Two-line headers keep the value columns narrow, so in an 80-column terminal the
# command is the one column that wraps.
HEADERS = (
    "pid",
    "role",
    "python",
    "rss\nMiB",
    "cpu\n%",
    "threads",
    "age",
    "pg\nconns",
    "memray",
    "ns pid",
    "command",
)


@target_options
def workers(
    target: TargetSpec,
    as_json: bool = JSON_OPTION,
) -> None:
    """List gateway masters and workers: PID, role, Python, RSS, CPU, DB connections, memray.

    Without --pid or --match, every gunicorn / uvicorn / hypercorn / granian server
    on this host is found.

    Example: profiler workers --pid 4242 --json
    """
    from rich.table import Table

    from profiler.report.tables import keep_whole, keep_words
    from profiler.targets.discovery import find_workers

    found = find_workers(target, console.warn)
    if as_json:
        console.print_json([asdict(w) for w in found])
        return
    if not found:
        console.info("no gateway-like servers found; name one with --pid or --match")
        return
    # No box: eleven columns fit 80 terminal columns only without borders.
    table = Table(*HEADERS, box=None, pad_edge=False)
    now = time.time()
    listed = {w.pid for w in found}
    for worker in _tree_order(found):
        role = "└ worker" if worker.role == "worker" and worker.ppid in listed else worker.role
        table.add_row(
            str(worker.pid),
            f"{role} ({worker.server})" if worker.server and worker.role == "master" else role,
            worker.python_version or "?",
            f"{worker.rss_bytes / units.MIB:.0f}",
            f"{worker.cpu_percent:.0f}",
            str(worker.threads),
            units.age(now - worker.started_at),
            str(worker.pg_connections),
            {True: "yes", False: "no", None: "?"}[worker.memray_importable],
            str(worker.ns_pid) + (f" in {worker.container}" if worker.container else ""),
            _short(worker.cmdline),
        )
    # Every value whole; the command takes what is left and folds rather than being cut.
    keep_whole(table, *HEADERS[:-2])
    keep_words(table, "ns pid")
    table.columns[-1].overflow = "fold"
    console.out.print(table)


def _tree_order(found: list[Worker]) -> list[Worker]:
    """Each master followed by its own workers: PID order alone interleaves two servers
    started together (a granian master's workers would sit under a uvicorn master)."""
    listed = {w.pid for w in found}
    ordered: list[Worker] = []
    for worker in found:
        if worker.ppid in listed:
            continue  # printed under its parent
        ordered.append(worker)
        ordered.extend(w for w in found if w.ppid == worker.pid)
    return ordered


def _short(text: str) -> str:
    return text if len(text) <= CMDLINE_WIDTH else text[: CMDLINE_WIDTH - 1] + "…"
