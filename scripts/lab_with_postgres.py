"""Start the lab gateway against a PostgreSQL you already run, instead of a throwaway one.

Usage:
    .venv/bin/python scripts/lab_with_postgres.py DSN [--mode held|fresh] [--workers 2]
        [--pool-size 5] [--max-overflow 10] [--pool-timeout 30] [--port 8000]
    .venv/bin/python scripts/lab_with_postgres.py --down

    .venv/bin/python scripts/lab_with_postgres.py postgresql://postgres@127.0.0.1:5432/test

What ``profiler lab up --dsn DSN`` does, through the library (scripts never call
the CLI): the lab schema is created and seeded in that database (tables under
``profiler_lab``), the downstream service and the gateway (gunicorn with uvicorn
workers) start on 127.0.0.1, and the script returns, leaving them running. The
DSN may be a libpq URI, ``key=value`` pairs or a SQLAlchemy URL; without one,
``PROFILER_DSN`` then ``DATABASE_URL`` are used. The server itself is never
started, stopped or reconfigured. ``--down`` (or ``profiler lab down``) stops
what the lab started, by PID. Needs the ``lab`` extra (``pip install -e '.[lab]'``).
"""

from __future__ import annotations

import argparse
import sys

from profiler.errors import ProfilerError
from profiler.lab.lifecycle import LabOptions, down, up
from profiler.lab.settings import MODES
from profiler.pg.dsn import redact, resolve


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dsn", nargs="?", help="PostgreSQL to use (default: $PROFILER_DSN)")
    parser.add_argument("--down", action="store_true", help="stop the running lab instead")
    parser.add_argument("--mode", choices=MODES, default="held")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=5)
    parser.add_argument("--max-overflow", type=int, default=10)
    parser.add_argument("--pool-timeout", type=float, default=30.0)
    parser.add_argument("--downstream-latency", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    def step(message: str) -> None:
        print(f"-- {message}", file=sys.stderr, flush=True)

    try:
        if args.down:
            down(step=step)
            return 0
        dsn = resolve(args.dsn)
        if dsn is None:
            parser.error("give a DSN, or set PROFILER_DSN or DATABASE_URL")
        options = LabOptions(
            mode=args.mode,
            workers=args.workers,
            pool_size=args.pool_size,
            max_overflow=args.max_overflow,
            pool_timeout=args.pool_timeout,
            downstream_latency=args.downstream_latency,
            port=args.port,
            dsn=dsn,
        )
        state = up(options, step=step)
    except ProfilerError as error:
        print(f"error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"next: {error.hint}", file=sys.stderr)
        return int(error.exit_code)
    print(f"lab up: {state.url} (mode {state.mode}) on {redact(dsn)}")
    print("load it:  profiler lab load --users 40 --seconds 15")
    print("stop it:  .venv/bin/python scripts/lab_with_postgres.py --down  (or profiler lab down)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
