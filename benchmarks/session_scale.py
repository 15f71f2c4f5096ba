"""What an hour-long session at 1,000 backends costs to convert, load and correlate.

A synthetic session folder is written with the real writers
(``RecordingWriter``, ``StackLogWriter``, ``JsonlWriter`` for RSS): 3,600
snapshots of 1,000 backends (3.6 M activity rows) at 1 s, owned by 8 gunicorn
workers (a few backends with no known owner, or a remote one), with a state mix
of idle, short active transactions and long idle-in-transaction episodes;
backends reconnect now and then (sometimes reusing their pid), one worker dies
three quarters of the way in and is replaced; about 100 k stack samples (every
worker dumped every 0.5 s, one or two threads) and an RSS point per worker per
second. Server times run 0.25 s behind ours.

Each phase then runs in its own child process, so its peak RSS
(``getrusage`` maxrss) is its own:

- ``convert``: ``activity.jsonl`` -> ``activity.parquet`` (what ``session run``
  does at the end);
- ``jsonl``: loading the JSONL directly (what reading a killed session costs);
- ``analyse``: ``profiler.session.open``, the activity table from Parquet, the
  stack samples and RSS, then ``held_episodes``, ``stacks_during``,
  ``hold_profile``, ``connections_held``, ``memory_alignment``.

Goal: load + correlate under 10 s and 1.5 GB peak.

Run: python benchmarks/session_scale.py [--dir DIR [--reuse]] [--snapshots 3600] [--backends 1000]
     [--workers 8] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from profiler import jsonl
from profiler.capture.stack_log import StackLogWriter
from profiler.capture.stacks import Frame, StackSample
from profiler.memory import rss as rss_log
from profiler.model import ActivitySample, Gap, Snapshot
from profiler.pg.recording import RecordingWriter
from profiler.targets.ownership import Owner

T0 = 1_750_000_000.0
SERVER_LAG = 0.25  # the server's clock runs this far behind ours
INTERVAL = 1.0
DUMP_INTERVAL = 0.5
WORKER_BASE = 2001


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


# -- generation --------------------------------------------------------------------------

QUERIES = [
    f"SELECT o.id, o.status, o.total, c.email FROM orders_{k % 40} AS o "
    f"JOIN customers AS c ON c.id = o.customer_id WHERE o.id = $1 /* route {k} */"
    for k in range(300)
]
APPS = ["gateway", "gateway-batch", "psql", "celery"]


class Fleet:
    """1,000 backends moving between idle, short transactions and long idle ones."""

    def __init__(self, backends: int, workers: list[int], rng: np.random.Generator) -> None:
        self.rng = rng
        self.size = backends
        self.pid = np.arange(30_000, 30_000 + backends, dtype=np.int64)
        self.next_pid = 30_000 + backends
        self.start = T0 - SERVER_LAG - rng.uniform(60, 3600, backends)
        self.owner_of = np.array([workers[i % len(workers)] for i in range(backends)])
        fate = rng.random(backends)
        self.unknown = fate < 0.03  # no owner found
        self.remote = (fate >= 0.03) & (fate < 0.05)  # a client on another host
        self.in_tx = np.zeros(backends, dtype=bool)
        self.idle_tx = np.zeros(backends, dtype=bool)
        self.remaining = np.zeros(backends, dtype=np.int64)
        self.xact = np.full(backends, np.nan)
        self.change = self.start.copy()
        self.query = rng.integers(0, len(QUERIES), backends)
        self.app = rng.integers(0, len(APPS), backends)

    def new_pids(self, chosen: np.ndarray[Any, Any]) -> None:
        count = int(chosen.sum()) if chosen.dtype == bool else len(chosen)
        self.pid[chosen] = np.arange(self.next_pid, self.next_pid + count)
        self.next_pid += count

    def replace_worker(self, dead: int, replacement: int, server_now: float) -> None:
        """The worker dies: its connections go, its replacement opens new ones."""
        gone = self.owner_of == dead
        self.owner_of[gone] = replacement
        self.new_pids(gone)
        self.start[gone] = server_now - 0.5
        self.in_tx[gone] = False
        self.xact[gone] = np.nan

    def step(self, server_now: float) -> None:
        rng = self.rng
        # Reconnects: a few idle backends are replaced, half of them reusing the pid.
        reconnect = np.flatnonzero((~self.in_tx) & (rng.random(self.size) < 0.0005))
        self.new_pids(reconnect[rng.random(reconnect.size) < 0.5])
        self.start[reconnect] = server_now - rng.uniform(0, 0.9, reconnect.size)
        # Transactions end, then new ones start: mostly short, a few long and idle.
        self.remaining[self.in_tx] -= 1
        ending = self.in_tx & (self.remaining <= 0)
        self.in_tx[ending] = False
        self.xact[ending] = np.nan
        self.change[ending] = server_now - rng.uniform(0, INTERVAL, int(ending.sum()))
        starting = (~self.in_tx) & (rng.random(self.size) < 0.15)
        count = int(starting.sum())
        long = rng.random(count) < 0.01
        self.remaining[starting] = np.where(
            long, rng.integers(20, 300, count), rng.integers(1, 3, count)
        )
        self.in_tx[starting] = True
        self.xact[starting] = server_now - rng.uniform(0, INTERVAL, count)
        self.idle_tx[starting] = long
        self.change[starting] = self.xact[starting] + np.where(long, 0.05, 0.0)
        self.query[starting] = rng.integers(0, len(QUERIES), count)
        # A long transaction wakes up now and then to run another statement.
        wake = self.in_tx & self.idle_tx & (rng.random(self.size) < 0.02)
        self.change[wake] = server_now - rng.uniform(0, 0.5, int(wake.sum()))
        self.query[wake] = rng.integers(0, len(QUERIES), int(wake.sum()))

    def owner(self, i: int) -> Owner | None:
        if self.unknown[i]:
            return None
        if self.remote[i]:
            return Owner("remote", detail="10.0.0.9 is not this host")
        worker = int(self.owner_of[i])
        return Owner("process", worker, f"gunicorn: worker [app] {worker}")

    def snapshot(self, taken: float, server_now: float) -> Snapshot:
        samples = []
        owners: dict[int, Owner] = {}
        for i in range(self.size):
            pid = int(self.pid[i])
            if self.in_tx[i]:
                state = "idle in transaction" if self.idle_tx[i] else "active"
                xact: float | None = float(self.xact[i])
            else:
                state, xact = "idle", None
            waiting = state != "active"
            samples.append(
                ActivitySample(
                    server_now + i * 1e-6, pid, None, "app", "app", APPS[self.app[i]],
                    "10.0.0.2", None, 40_000 + i, float(self.start[i]), xact,
                    float(self.change[i]) - 0.001, float(self.change[i]),
                    "Client" if waiting else None, "ClientRead" if waiting else None, state,
                    None, None, None, QUERIES[self.query[i]], False, "client backend",
                )
            )  # fmt: skip
            found = self.owner(i)
            if found is not None:
                owners[pid] = found
        return Snapshot(utc(taken), 160004, tuple(samples), owners, {})


def write_activity(
    path: Path, snapshots: int, backends: int, workers: list[int], replacement: int, dies_at: int
) -> int:
    rng = np.random.default_rng(7)
    fleet = Fleet(backends, workers, rng)
    header = {"interval": INTERVAL, "server_version": 160004, "dsn": "postgresql://app@db/app"}
    rows = 0
    with RecordingWriter(path, header) as out:
        for tick in range(snapshots):
            taken = T0 + tick * INTERVAL + float(rng.uniform(0, 0.01))
            server_now = taken - SERVER_LAG
            if tick == dies_at:
                fleet.replace_worker(workers[-1], replacement, server_now)
            fleet.step(server_now)
            out.add(fleet.snapshot(taken, server_now))
            rows += backends
            if tick == snapshots // 2:
                out.add(Gap(utc(taken + 0.5), utc(taken + 0.9), "server restart (synthetic)"))
    return rows


def alive(second: float, workers: list[int], replacement: int, dies_at: int) -> list[int]:
    return [*workers[:-1], replacement] if second >= dies_at else workers


def write_stacks(
    path: Path, snapshots: int, workers: list[int], replacement: int, dies_at: int
) -> int:
    """Every live worker dumped every 0.5 s, one or two threads, stacks 12-40 frames deep."""
    pyrng = random.Random(7)
    frames = [
        Frame(f"frame_{k}", f"/srv/app/module_{k % 23}.py", 10 + k, None, f"module_{k % 23}.py")
        for k in range(400)
    ]
    stacks = [tuple(pyrng.sample(frames, pyrng.randint(12, 40))) for _ in range(60)]
    written = 0
    with StackLogWriter(path, {"interval": DUMP_INTERVAL}) as log:
        for dump in range(int(snapshots * INTERVAL / DUMP_INTERVAL)):
            second = dump * DUMP_INTERVAL
            for worker in alive(second, workers, replacement, dies_at):
                for thread in range(1 if pyrng.random() < 0.25 else 2):
                    log.add(
                        StackSample(
                            worker_pid=worker,
                            thread_id=140_000 + thread,
                            thread_name="MainThread" if thread == 0 else "pool-1",
                            taken_at=utc(T0 + second + 0.003),
                            dump_seconds=0.02,
                            active=pyrng.random() < 0.4,
                            owns_gil=False,
                            frames=stacks[pyrng.randrange(len(stacks))],
                            os_thread_id=worker * 10 + thread,
                        )
                    )
                    written += 1
    return written


def write_rss(
    path: Path, snapshots: int, workers: list[int], replacement: int, dies_at: int
) -> int:
    written = 0
    with jsonl.JsonlWriter(path, rss_log.FORMAT, rss_log.VERSION, {"interval": 1.0}) as out:
        for tick in range(snapshots):
            when = utc(T0 + tick + 0.1).isoformat()
            for worker in alive(tick, workers, replacement, dies_at):
                value = 150_000_000 + tick * 10_000 + (worker - WORKER_BASE) * 1_000_000
                out.write({"kind": "rss", "pid": worker, "taken_at": when, "rss": value})
                written += 1
    return written


def write_manifest(directory: Path, snapshots: int, workers: list[int]) -> None:
    manifest = {
        "format": "profiler-session",
        "version": 1,
        "name": "scale",
        "started_at": utc(T0).isoformat(),
        "ended_at": utc(T0 + snapshots * INTERVAL).isoformat(),
        "interrupted": False,
        "host": {},
        "tools": {},
        "settings": {
            "duration": snapshots * INTERVAL,
            "pg_interval": INTERVAL,
            "dump_interval": DUMP_INTERVAL,
            "rss_interval": 1.0,
            "cpu": False,
            "mem": False,
        },
        "dsn": "postgresql://app@db/app",
        "targets": [{"pid": w, "role": "worker", "cmdline": "gunicorn"} for w in workers],
        "probes": {
            name: {"status": "ok", "error": None, "files": [f"{file}.jsonl"]}
            for name, file in (("pg", "activity"), ("stacks", "stacks"), ("rss", "rss"))
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def generate(directory: Path, snapshots: int, backends: int, workers: int) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    pids = [WORKER_BASE + w for w in range(workers)]
    replacement = WORKER_BASE + workers  # takes over from the worker that dies
    dies_at = int(snapshots * 0.75)
    args = (pids, replacement, dies_at)
    sizes: dict[str, Any] = {
        "activity rows": write_activity(directory / "activity.jsonl", snapshots, backends, *args),
        "stack samples": write_stacks(directory / "stacks.jsonl", snapshots, *args),
        "rss points": write_rss(directory / "rss.jsonl", snapshots, *args),
    }
    write_manifest(directory, snapshots, pids)
    for name in ("activity.jsonl", "stacks.jsonl"):
        sizes[f"{name} MB"] = round((directory / name).stat().st_size / 1e6)
    return sizes


# -- phases, each in its own process ------------------------------------------------------


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def phase_convert(directory: Path) -> dict[str, Any]:
    from profiler.session import activity_table

    started = time.perf_counter()
    rows = activity_table.convert(directory / "activity.jsonl", directory / "activity.parquet")
    return {
        "convert JSONL -> Parquet": time.perf_counter() - started,
        "rows": rows,
        "activity.parquet MB": (directory / "activity.parquet").stat().st_size / 1e6,
        "peak MB": peak_mb(),
    }


def phase_jsonl(directory: Path) -> dict[str, Any]:
    from profiler.session import activity_table

    started = time.perf_counter()
    frame = activity_table.frame_from_jsonl(directory / "activity.jsonl")
    return {
        "load activity from JSONL": time.perf_counter() - started,
        "rows": len(frame),
        "frame MB": frame.memory_usage(deep=True).sum() / 1e6,
        "peak MB": peak_mb(),
    }


def phase_analyse(directory: Path) -> dict[str, Any]:
    import profiler.session
    from profiler.analysis import episodes

    timings: dict[str, Any] = {}

    def timed(name: str, call: Any) -> Any:
        started = time.perf_counter()
        result = call()
        timings[name] = time.perf_counter() - started
        return result

    session = timed("open", lambda: profiler.session.open(directory))
    activity = timed("load activity (Parquet)", lambda: session.activity)
    samples = timed("load stack samples (JSONL)", lambda: session.stack_samples)
    rss = timed("load RSS (JSONL)", lambda: session.rss)
    end = session.ended_at.timestamp()
    held = timed(
        "held_episodes",
        lambda: episodes.held_episodes(activity, session_end=end, snapshots=session.snapshots),
    )
    during = timed("stacks_during", lambda: episodes.stacks_during(held, samples))
    profile = timed(
        "hold_profile", lambda: episodes.hold_profile(held, samples, interval=DUMP_INTERVAL)
    )
    counts = timed("connections_held", lambda: episodes.connections_held(activity))
    aligned = timed("memory_alignment", lambda: episodes.memory_alignment(counts, rss))
    timings["load + correlate"] = sum(
        v for k, v in timings.items() if k not in ("load + correlate",)
    )
    timings.update(
        {
            "rows": len(activity),
            "activity frame MB": activity.memory_usage(deep=True).sum() / 1e6,
            "episodes": len(held),
            "open episodes": int(held["open"].sum()),
            "stacks_during rows": len(during),
            "hold_profile stacks": len(profile),
            "connections_held rows": len(counts),
            "memory_alignment rows": len(aligned),
            "peak MB": peak_mb(),
        }
    )
    return timings


PHASES = {"convert": phase_convert, "jsonl": phase_jsonl, "analyse": phase_analyse}


def run_phase(name: str, directory: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--dir", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, help="session folder (kept); default a temp folder")
    parser.add_argument("--snapshots", type=int, default=3600)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    parser.add_argument("--reuse", action="store_true", help="use --dir as already generated")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.dir)))
        return

    directory = args.dir or Path(tempfile.mkdtemp(prefix="session-scale-")) / "session"
    try:
        if not args.reuse:
            started = time.perf_counter()
            sizes = generate(directory, args.snapshots, args.backends, args.workers)
            print(f"generated {directory} in {time.perf_counter() - started:.0f} s: {sizes}")
        results = {name: run_phase(name, directory) for name in ("convert", "jsonl", "analyse")}
    finally:
        if not (args.keep or args.dir):
            shutil.rmtree(directory.parent, ignore_errors=True)
    print()
    print("| phase | step | seconds |")
    print("|---|---|---:|")
    for phase, values in results.items():
        for key, value in values.items():
            if isinstance(value, float) and "MB" not in key:
                print(f"| {phase} | {key} | {value:.2f} |")
    print()
    print("| phase | measure | value |")
    print("|---|---|---:|")
    for phase, values in results.items():
        for key, value in values.items():
            if isinstance(value, int) or "MB" in key:
                shown = f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"
                print(f"| {phase} | {key} | {shown} |")


if __name__ == "__main__":
    main()
