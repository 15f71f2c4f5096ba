"""What memray attached to every worker costs the lab gateway, and how big its captures get.

The lab in fresh mode (2 gunicorn/uvicorn workers, fast downstream, so they are
CPU-bound) on an embedded PostgreSQL, 20 users on loopback. Conditions: memray
attached to both workers with the default (all allocations) format,
``--aggregate`` and ``--native``. Every tracked window runs right after a
window without memray and is compared with that one only (throughput on this
VM drifts 10-20% between windows); ``--cycles`` pairs per condition.

Printed per condition: throughput and p99 as ratios (median and range), the
capture size per worker-minute (after memray compresses it on detach), and the
time from starting the checks to every worker tracking (pre-flight plus the
parallel attach), which is what a user waits for.

Run: python benchmarks/mem_attach.py [--seconds 8] [--cycles 3] [--users 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cpu_bound_lab import cpu_bound_lab

from profiler.lab.load import run_load
from profiler.memory import preflight
from profiler.memory.attach import (
    MemOptions,
    WorkerCapture,
    attach_all,
    attach_command,
    detach_all,
    safety_seconds,
)
from profiler.session.load_record import LoadResult


@dataclass
class Condition:
    name: str
    options: MemOptions | None
    loads: list[LoadResult] = field(default_factory=list)
    bytes_per_worker_minute: list[float] = field(default_factory=list)
    ready_seconds: list[float] = field(default_factory=list)


def run_tracked(
    pids: list[int], options: MemOptions, seconds: float, users: int, url: str
) -> tuple[LoadResult, float, float]:
    """One window with memray on every worker: (load, bytes per worker-minute, ready seconds)."""
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        ready = [preflight.check(pid) for pid in pids]
        captures = [
            WorkerCapture(
                ready=worker,
                capture=Path(out) / f"memray-{worker.pid}.bin",
                command=attach_command(
                    worker,
                    Path(out) / f"memray-{worker.pid}.bin",
                    options,
                    safety_seconds(seconds, len(pids)),
                ),
            )
            for worker in ready
        ]
        attach_all(captures)
        ready_seconds = time.monotonic() - started
        failed = [c.error for c in captures if c.status != "tracking"]
        assert not failed, failed
        tracking_from = time.monotonic()
        result = run_load(url, users=users, seconds=seconds)
        detach_all(captures)
        tracked_minutes = (time.monotonic() - tracking_from) / 60
        sizes = [c.capture.stat().st_size for c in captures]
    return result, statistics.mean(sizes) / tracked_minutes, ready_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()

    baseline = Condition("no profiler", None)
    conditions = [
        Condition("memray (all allocations, default)", MemOptions()),
        Condition("memray --aggregate", MemOptions(aggregate=True)),
        Condition("memray --native", MemOptions(native=True)),
    ]
    with cpu_bound_lab(args.users) as (state, pids):
        for cycle in range(args.cycles):
            for condition in conditions:
                baseline.loads.append(run_load(state.url, users=args.users, seconds=args.seconds))
                assert condition.options is not None
                result, size, ready = run_tracked(
                    pids, condition.options, args.seconds, args.users, state.url
                )
                condition.loads.append(result)
                condition.bytes_per_worker_minute.append(size)
                condition.ready_seconds.append(ready)
                print(
                    f"  cycle {cycle + 1} {condition.name}: {result.rps:.1f} req/s "
                    f"(baseline {baseline.loads[-1].rps:.1f}), capture "
                    f"{size / 2**20:.1f} MiB/worker-min, tracking after {ready:.1f}s",
                    flush=True,
                )

    print(
        f"\n## memray on every lab worker ({args.users} users, {args.seconds:g} s windows, "
        f"{args.cycles} cycles)\n"
    )
    print(
        "| condition | throughput (median, range) | p99 (median) | capture per worker-minute "
        "| all workers tracking after |"
    )
    print("|---|---:|---:|---:|---:|")
    base = baseline.loads
    print(
        f"| no profiler | {statistics.median(r.rps for r in base):.1f} req/s "
        f"| {statistics.median(r.p99_ms or 0 for r in base):.0f} ms | - | - |"
    )
    for index, condition in enumerate(conditions):
        pairs = [
            (base[cycle * len(conditions) + index], result)
            for cycle, result in enumerate(condition.loads)
        ]
        throughput = [r.rps / b.rps for b, r in pairs]
        p99 = [(r.p99_ms or 0) / b.p99_ms for b, r in pairs if b.p99_ms]
        print(
            f"| {condition.name} | {statistics.median(throughput):.3f} "
            f"({min(throughput):.2f}-{max(throughput):.2f}) | {statistics.median(p99):.2f}x "
            f"| {statistics.median(condition.bytes_per_worker_minute) / 2**20:.1f} MiB "
            f"| {statistics.median(condition.ready_seconds):.1f} s "
            f"(max {max(condition.ready_seconds):.1f}) |"
        )


if __name__ == "__main__":
    main()
