"""The topology matrix as a table: does the join hold on each server and topology?

For each of {gunicorn, granian} x {tcp, unix-socket, pgbouncer-session,
pgbouncer-transaction}, the lab is recorded held and then fresh (the load of
``profiler.lab.topologies.CellLoad``) and each cell prints: who owned the idle
transactions (the workers, never the pooler), the poolers seen through,
connection-seconds attributed to code, the share of the invoke endpoint's hold in
the downstream call, throughput, and whether fresh raised an idle-in-transaction
finding. The acceptance test (tests/test_topologies.py) asserts the same cells.

    .venv/bin/python benchmarks/topologies.py                 # embedded PostgreSQL
    .venv/bin/python benchmarks/topologies.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from profiler.lab.topologies import MATRIX_SERVERS, TOPOLOGIES, Cell, record_cell


def _rps(cell: Cell) -> str:
    return "-" if cell.throughput_rps is None else f"{cell.throughput_rps:.1f}"


def _row(held: Cell, fresh: Cell) -> str:
    owners = "workers" if held.owners_are_workers and not held.unowned else "NOT workers"
    share = "-" if held.downstream_share is None else f"{held.downstream_share:.0%}"
    via = ", ".join(held.vias) or "-"
    return (
        f"| {held.server} | {held.topology} | {owners} ({len(held.owners)}/{len(held.workers)}) "
        f"| {via} | {held.attributed_seconds:.1f} s | {share} | {_rps(held)} → {_rps(fresh)} "
        f"| {'yes' if fresh.idle_in_transaction else 'no'} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL (libpq URI); default: an embedded server")
    parser.add_argument("--servers", nargs="+", default=list(MATRIX_SERVERS))
    parser.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES))
    args = parser.parse_args()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="topologies-")))
        os.environ["PROFILER_STATE_DIR"] = str(root / "state")
        dsn = args.dsn
        if dsn is None:
            from profiler.pg import embedded

            server = embedded.start()
            stack.callback(embedded.stop, server.pgdata, pid=server.pid)
            dsn = server.dsn
        print(
            "| server | topology | idle-in-tx owners | via | attributed | downstream share "
            "| req/s held → fresh | fresh: idle finding |"
        )
        print("|---|---|---|---|---:|---:|---|---|")
        for name in args.servers:
            for topology in args.topologies:
                cell = {
                    mode: record_cell(name, topology, mode, dsn, root / f"{name}-{topology}-{mode}")
                    for mode in ("held", "fresh")
                }
                print(_row(cell["held"], cell["fresh"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
