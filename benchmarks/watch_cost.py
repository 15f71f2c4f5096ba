"""What the flight recorder costs while nothing is wrong: CPU, memory, disk, lab throughput.

The lab in ``fresh`` mode (healthy: no rule fires, so this is the always-on
cost; an incident's burst is a rare, bounded extra) on a real PostgreSQL,
``profiler watch`` at its defaults (pg_stat_activity with owners at 1 Hz,
stack dumps at 0.2 Hz, RSS and membership at 1 Hz, 5-minute ring) as a real
subprocess. Two phases:

- ``idle``: the recorder on the idle lab for ``--minutes``;
- ``load``: ``--users`` users load the lab on loopback for twice ``--minutes``, in
  blocks of ``--block`` seconds that alternate between the recorder running and
  the recorder paused (SIGSTOP, its py-spy children included: it takes no CPU
  and touches no worker). On a shared 2-core VM the lab's own throughput drifts
  by tens of percent over minutes; alternating short blocks in one run puts
  both sides of the ratio under the same drift.

Per phase: CPU as % of one core (the recorder's user + system time, its py-spy
children included, over the wall time it ran), RSS at the end and its peak
(sampled every 2 s), and bytes written into its folder, scaled to an hour.
Throughput ratio: successful requests per second in the running blocks over
the paused blocks (a short warm-up load runs first so neither pays for cold
caches). The downstream call is short (``--latency``, 50 ms) so the
workers are CPU-bound and the ratio sees any CPU the recorder takes from them.

Goals: <= 1% of one core, <= 100 MB written per hour, ratio >= 0.99.

Run: python benchmarks/watch_cost.py [--minutes 10] [--block 30] [--users 16] [--latency 0.05]
     [--dsn DSN] [--json]  (without --dsn, the lab starts an embedded PostgreSQL)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from profiler.lab.lifecycle import LabOptions, down, up
from profiler.lab.load import run_load
from profiler.pg.embedded import free_port
from profiler.watch.retention import folder_bytes

GOAL_CPU_PERCENT = 1.0
GOAL_MB_PER_HOUR = 100.0
GOAL_RATIO = 0.99
WARMUP_SECONDS = 20.0
MB = 1_000_000


class Watched:
    """The recorder subprocess and what it costs, from one reading to the next."""

    def __init__(self, out: Path, master_pid: int, dsn: str) -> None:
        self.out = out
        self.log = out.with_suffix(".log").open("w")
        argv = ["watch", "--pid", str(master_pid), "--dsn", dsn, "-o", str(out)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "profiler", *argv],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.proc = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 60
        while not (out / "watch.json").exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the recorder did not start: see {self.log.name}")
            time.sleep(0.2)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)
        self._sampler.start()

    def _sample_rss(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def cpu_seconds(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def pause(self, paused: bool) -> None:
        """SIGSTOP (or SIGCONT) the recorder and whatever children it has right now."""
        sig = signal.SIGSTOP if paused else signal.SIGCONT
        for proc in [self.proc, *self.proc.children(recursive=True)]:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                continue

    def measure(self, windows: list[tuple[bool, Any]]) -> dict[str, Any]:
        """Run each ``(recorder running?, work)`` window; the recorder's cost over the running
        ones and what each kind of window's work returned."""
        cpu = wall = 0.0
        written = 0
        results: dict[bool, list[Any]] = {True: [], False: []}
        for running, work in windows:
            self.pause(not running)
            cpu0, bytes0, wall0 = self.cpu_seconds(), folder_bytes(self.out), time.monotonic()
            results[running].append(work())
            if running:
                wall += time.monotonic() - wall0
                cpu += self.cpu_seconds() - cpu0
                written += folder_bytes(self.out) - bytes0
        self.pause(False)
        rss = self.proc.memory_info().rss
        return {
            "seconds": round(wall, 1),
            "cpu_percent": round(100 * cpu / wall, 3),
            "rss_mb": round(rss / MB, 1),
            "peak_rss_mb": round(max(rss, self.peak_rss) / MB, 1),
            "written_mb_per_hour": round(written / MB * 3600 / wall, 2),
            "with": results[True],
            "without": results[False],
        }

    def stop(self) -> int:
        self._stop.set()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(120)
        self.log.close()
        return code


def _load(url: str, users: int, seconds: float) -> dict[str, Any]:
    result = run_load(url, users=users, seconds=seconds)
    return {"seconds": seconds, "requests": result.requests, "errors": result.errors}


def _rps(blocks: list[dict[str, Any]]) -> float:
    ok = sum(b["requests"] - b["errors"] for b in blocks)
    return ok / sum(b["seconds"] for b in blocks)


def run(
    minutes: float, block: float, users: int, latency: float, dsn: str | None
) -> dict[str, Any]:
    seconds = minutes * 60
    blocks = max(1, round(seconds / block))
    with tempfile.TemporaryDirectory(prefix="watch-cost-") as scratch:
        os.environ["PROFILER_STATE_DIR"] = str(Path(scratch) / "state")
        options = LabOptions(
            mode="fresh",
            workers=2,
            pool_size=10,  # a steady pool, as production configures one: overflow
            max_overflow=0,  # connections churn, and each new backend costs an ownership scan
            downstream_latency=latency,
            port=free_port(),
            dsn=dsn,
        )
        state = up(options, step=lambda line: print(f"  {line}", file=sys.stderr))
        try:
            assert state.master is not None
            url = state.url
            print(f"warm-up load {WARMUP_SECONDS:g}s", file=sys.stderr)
            _load(url, users, WARMUP_SECONDS)
            recorder = Watched(Path(scratch) / "watch", state.master.pid, state.dsn)
            try:
                print(f"idle: {seconds:g}s", file=sys.stderr)
                idle = recorder.measure([(True, lambda: time.sleep(seconds))])
                print(f"load: {2 * blocks} blocks of {seconds / blocks:g}s", file=sys.stderr)

                def load() -> dict[str, Any]:
                    return _load(url, users, seconds / blocks)

                windows = [(running, load) for _ in range(blocks) for running in (True, False)]
                loaded = recorder.measure(windows)
            finally:
                code = recorder.stop()
            incidents = sorted(p.name for p in (Path(scratch) / "watch").glob("incident-*"))
        finally:
            down()
    with_rps, without_rps = _rps(loaded["with"]), _rps(loaded["without"])
    return {
        "minutes_per_phase": minutes,
        "block_seconds": round(seconds / blocks, 1),
        "users": users,
        "downstream_latency": latency,
        "idle": idle,
        "load": loaded,
        "rps_with": round(with_rps, 2),
        "rps_without": round(without_rps, 2),
        "throughput_ratio": round(with_rps / without_rps, 4) if without_rps else None,
        "incidents": incidents,
        "recorder_exit": code,
    }


def report(figures: dict[str, Any]) -> None:
    print(
        f"\n## profiler watch at its defaults, {figures['minutes_per_phase']:g} min per phase, "
        f"{figures['users']} users, {figures['downstream_latency'] * 1000:g} ms downstream, "
        f"{figures['block_seconds']:g} s blocks\n"
    )
    print("| phase | CPU (% of one core) | RSS | peak RSS | written per hour | lab rps |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("idle", "load"):
        row = figures[name]
        rps = figures["rps_with"] if name == "load" else "-"
        print(
            f"| {name} | {row['cpu_percent']:.2f}% | {row['rss_mb']:.0f} MB | "
            f"{row['peak_rss_mb']:.0f} MB | {row['written_mb_per_hour']:.2f} MB | {rps} |"
        )
    print(f"| load, recorder paused | - | - | - | - | {figures['rps_without']} |")
    ratio = figures["throughput_ratio"]
    cpu = max(figures["idle"]["cpu_percent"], figures["load"]["cpu_percent"])
    written = max(figures["idle"]["written_mb_per_hour"], figures["load"]["written_mb_per_hour"])
    print(f"\nthroughput with / without the recorder: {ratio}")
    print(f"incidents: {len(figures['incidents'])}; recorder exit code {figures['recorder_exit']}")
    print(
        f"goals: CPU <= {GOAL_CPU_PERCENT}% ({'met' if cpu <= GOAL_CPU_PERCENT else 'MISSED'}), "
        f"<= {GOAL_MB_PER_HOUR:g} MB/hour "
        f"({'met' if written <= GOAL_MB_PER_HOUR else 'MISSED'}), ratio >= {GOAL_RATIO} "
        f"({'met' if ratio is not None and ratio >= GOAL_RATIO else 'MISSED'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="per phase (default 10)")
    parser.add_argument("--block", type=float, default=30.0, help="seconds per load block")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05, help="downstream seconds")
    parser.add_argument("--dsn", default=None, help="PostgreSQL for the lab (else embedded)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run(args.minutes, args.block, args.users, args.latency, args.dsn)
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True))
    else:
        report(figures)


if __name__ == "__main__":
    main()
