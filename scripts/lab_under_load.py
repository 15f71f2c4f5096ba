"""Start the lab, drive bounded load, print pg_stat_activity state counts each second.

Uses the library, not the CLI: this is what `profiler demo` will grow from.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import replace

from profiler.analysis.activity import by_state
from profiler.lab.lifecycle import LabOptions, down, up
from profiler.lab.load import LoadResult, run_load
from profiler.model import Snapshot
from profiler.pg.embedded import free_port
from profiler.pg.sampler import ActivitySampler

GATEWAY_APPLICATION = "lab-gateway"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["held", "fresh"], default="held")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--max-overflow", type=int, default=0)
    parser.add_argument("--pool-timeout", type=float, default=30.0)
    parser.add_argument("--downstream-latency", type=float, default=1.0)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()

    options = LabOptions(
        mode=args.mode,
        workers=args.workers,
        pool_size=args.pool_size,
        max_overflow=args.max_overflow,
        pool_timeout=args.pool_timeout,
        downstream_latency=args.downstream_latency,
        port=free_port(),
    )
    state = up(options, step=lambda message: print(f"-- {message}", flush=True))
    try:
        print(
            f"-- load: {args.users} users for {args.seconds:g}s on {state.url} "
            f"(pool {args.pool_size}+{args.max_overflow} x {args.workers} workers)",
            flush=True,
        )
        result: list[LoadResult] = []
        loader = threading.Thread(
            target=lambda: result.append(
                run_load(state.url, users=args.users, seconds=args.seconds)
            )
        )
        loader.start()
        print(f"{'t':>5}  {'state':<22}{'backends':>9}{'oldest s':>10}")
        with ActivitySampler(state.dsn, owners=False) as sampler:
            started = time.monotonic()
            while loader.is_alive():
                elapsed = time.monotonic() - started
                for name, summary in by_state(_gateway_only(sampler.snapshot())).items():
                    print(
                        f"{elapsed:5.1f}  {name:<22}{summary.backends:>9}"
                        f"{summary.oldest_seconds or 0.0:>10.2f}"
                    )
                time.sleep(1.0)
        loader.join()
        load = result[0]
        print(
            f"-- {args.mode}: {load.rps} req/s, p50 {load.p50_ms} ms, p99 {load.p99_ms} ms, "
            f"{load.errors} errors of {load.requests} ({load.by_status}), "
            f"{load.unfinished} in flight when the run ended"
        )
    finally:
        down()


def _gateway_only(snapshot: Snapshot) -> Snapshot:
    backends = tuple(b for b in snapshot.backends if b.application_name == GATEWAY_APPLICATION)
    return replace(snapshot, backends=backends)


if __name__ == "__main__":
    main()
