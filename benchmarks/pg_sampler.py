"""What one activity snapshot costs, at 200, 500 and 2,000 backends.

A child process (standing in for a gateway worker) holds N connections, half
idle and half idle in transaction, on a throwaway PostgreSQL with
max_connections raised. The sampler, in this process, then takes snapshots at
full fidelity (every row, owners resolved) as fast as it can. Printed per N:

- snapshots per second, back to back;
- our CPU per snapshot (process time: fetch + decode + ownership);
- ownership mapping per snapshot, cold (first) and warm (cached);
- the server's execution time of the activity query (EXPLAIN ANALYZE, median).

Run: python benchmarks/pg_sampler.py [--backends 200 500 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import psycopg

from profiler.capture.processes import stop_pid
from profiler.pg import embedded, queries
from profiler.pg.sampler import ActivitySampler

HOLDER = r"""
import resource, sys, psycopg
n, dsn = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
conns = []
for i in range(n):
    conn = psycopg.connect(dsn, autocommit=(i % 2 == 0), application_name="bench-holder")
    conn.execute("SELECT 1")  # odd ones: a transaction left open
    conns.append(conn)
print("ready", flush=True)
sys.stdin.read()
"""


def measure(dsn: str, backends: int, seconds: float) -> dict[str, float]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(backends), dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "ready":
            raise SystemExit(f"the holder could not open {backends} connections")
        with ActivitySampler(dsn, interval=0.1) as sampler:
            cold = sampler.snapshot()
            cpu_start, wall_start, count = time.process_time(), time.perf_counter(), 0
            owner_times = []
            while time.perf_counter() - wall_start < seconds:
                snap = sampler.snapshot()
                owner_times.append(snap.owner_seconds)
                count += 1
            cpu = time.process_time() - cpu_start
            wall = time.perf_counter() - wall_start
            rows = len(snap.backends)
            owned = sum(1 for o in snap.owners.values() if o.pid == holder.pid)
            server_ms = _server_ms(dsn, sampler.server_version)
        return {
            "backends": rows,
            "owned_by_holder": owned,
            "snapshots_per_s": count / wall,
            "cpu_ms_per_snapshot": 1000 * cpu / count,
            "owner_cold_ms": 1000 * cold.owner_seconds,
            "owner_warm_ms": 1000 * statistics.median(owner_times),
            "server_ms": server_ms,
        }
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        stop_pid(holder.pid)
        holder.wait()


def _server_ms(dsn: str, version: int, repeats: int = 20) -> float:
    sql = queries.load("activity", version)
    times = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(repeats):
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql).fetchone()[0]
            times.append(plan[0]["Execution Time"])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", type=int, nargs="+", default=[200, 500, 2000])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    server = embedded.start(settings={"max_connections": str(max(args.backends) + 50)})
    try:
        print(
            f"PostgreSQL {server.version} (embedded), "
            f"{args.seconds:g}s of back-to-back snapshots each"
        )
        print(
            f"{'backends':>8} {'snap/s':>8} {'cpu ms/snap':>12} {'owners cold ms':>15} "
            f"{'owners warm ms':>15} {'server ms':>10} {'owned':>6}"
        )
        for n in args.backends:
            r = measure(server.dsn, n, args.seconds)
            print(
                f"{r['backends']:>8} {r['snapshots_per_s']:>8.0f} "
                f"{r['cpu_ms_per_snapshot']:>12.2f} "
                f"{r['owner_cold_ms']:>15.1f} {r['owner_warm_ms']:>15.3f} {r['server_ms']:>10.2f} "
                f"{r['owned_by_holder']:>6}",
                flush=True,
            )
    finally:
        embedded.stop(server.pgdata, pid=server.pid)


if __name__ == "__main__":
    main()
