"""How long until the task sampler and memray are live in every worker: healthy, wedged, idle.

The lab in held mode (:mod:`profiler.lab.wedged`: default pool_timeout 30 s, 4
connections per worker, 1 s downstream) on an embedded PostgreSQL, in three
states, in this order: (c) idle, (a) healthy under light load, (b) wedged by
overload (every thread of every worker asleep, checked before measuring). In each state,
``--attaches`` rounds; a round injects the task sampler into all workers at
once (as ``session run`` does) and then attaches memray to all of them at
once, timing each worker from the call to "live" (the sampler runs; memray
tracks), then stops both. After every round every worker is checked: alive,
no thread stopped (state T), RSS below twice its start, memray detached
cleanly, and, when not wedged, the gateway answers ``/health``.

Printed: per state, probe and worker, the median and max seconds to live, and
the route taken (``fast``, or memray's ``breakpoints`` fallback). ``--old``
also times memray's own ``memray attach --method gdb`` (its breakpoint route),
unless that route is unsafe on this host (gdb 13 on an AMX CPU kills the worker).

Run: python benchmarks/attach_latency.py [--attaches 10] [--workers 2] [--old]
(``--attaches 50`` is the safety soak: 50 attach/detach cycles per state.)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from profiler.capture import task_control, task_inject
from profiler.capture.channel import breakpoint_route_unsafe
from profiler.lab import wedged
from profiler.lab.state import LabState
from profiler.memory.attach import still_tracking

Times = dict[tuple[str, str, int], list[float]]


def attach_tasks(pid: int, out: Path) -> tuple[float, Path]:
    path = out / f"tasks-{pid}-{time.monotonic_ns()}.jsonl"
    started = time.monotonic()
    task_inject.inject(pid, path, interval=0.2, duration=60, lease_seconds=None)
    return time.monotonic() - started, path


def attach_memray(pid: int, out: Path, old: bool = False) -> tuple[float, str]:
    capture = out / f"memray-{pid}-{time.monotonic_ns()}.bin"
    if old:
        command = [sys.executable, "-m", "memray", "attach", "--method", "gdb"]
        command += ["-o", str(capture), "--duration", "120", str(pid)]
    else:
        command = [sys.executable, "-m", "profiler.memory.lend", "--pid", str(pid), "--no-lend"]
        command += ["--output", str(capture), "--duration", "120", "--method", "gdb"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"memray attach to {pid} failed: {result.stderr.strip()[-300:]}")
    route = "breakpoints" if old or "breakpoint route" in result.stderr else "fast"
    return seconds, route


def detach(pid: int) -> str | None:
    """memray detach through our channel: None when it was tracking and now is not."""
    command = [sys.executable, "-m", "profiler.memory.lend", "--detach", "--pid", str(pid)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    return None if result.returncode == 0 else result.stderr.strip()[-300:]


def check(pids: list[int], rss_start: dict[int, int], url: str, serving: bool) -> None:
    for pid in pids:
        process = psutil.Process(pid)
        assert process.is_running(), f"worker {pid} died"
        for thread in process.threads():
            stat = Path(f"/proc/{pid}/task/{thread.id}/stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            assert state not in ("T", "t"), f"worker {pid} thread {thread.id} stopped"
        rss = process.memory_info().rss
        assert rss < 2 * rss_start[pid], f"worker {pid} RSS {rss} vs {rss_start[pid]} at start"
    if serving:
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def one_round(
    state: str, pids: list[int], out: Path, times: Times, routes: dict[str, set[str]], old: bool
) -> None:
    with ThreadPoolExecutor(len(pids)) as pool:
        done = list(pool.map(lambda pid: attach_tasks(pid, out), pids))
        for pid, (seconds, _) in zip(pids, done, strict=True):
            times[(state, "tasks", pid)].append(seconds)
        paths = [path for _, path in done]
        for path in paths:
            task_control.request_stop(path)
        memray = list(pool.map(lambda pid: attach_memray(pid, out), pids))
        for pid, (seconds, route) in zip(pids, memray, strict=True):
            times[(state, "memray", pid)].append(seconds)
            routes[state].add(route)
        detached = list(pool.map(detach, pids))
        assert not any(detached), f"memray detach failed: {detached}"
        assert not any(pool.map(still_tracking, pids)), "memray still tracking after detach"
        if old:
            previous = list(pool.map(lambda pid: attach_memray(pid, out, old=True), pids))
            for pid, (seconds, _) in zip(pids, previous, strict=True):
                times[(state, "memray (old route)", pid)].append(seconds)
            list(pool.map(still_tracking, pids))
    assert task_control.wait_for_end(paths, timeout=10) == [], "a sampler did not stop"


def run_state(
    state: str,
    lab: LabState,
    rounds: int,
    times: Times,
    routes: dict[str, set[str]],
    old: bool,
    wedge: bool = False,
) -> int:
    """``rounds`` rounds on the lab's current workers; how many workers gunicorn replaced.

    A wedged worker whose loop misses gunicorn's heartbeat for ``--timeout`` (120 s
    in the lab) is killed by the arbiter (``WORKER TIMEOUT``) and replaced, as on a
    real gateway: a round that loses a worker that way is retried on the current
    workers (the log line is the evidence); losing one otherwise is a failure.
    """
    assert lab.master is not None
    log = Path(lab.log_dir) / "gateway.log"
    replaced = 0
    done = 0
    with tempfile.TemporaryDirectory() as out:
        while done < rounds:
            pids = wedged.worker_pids(lab.master.pid)
            deadline = time.monotonic() + 90
            while wedge and not all(wedged.asleep(pid) for pid in pids):
                assert time.monotonic() < deadline, f"the lab did not wedge after {done} rounds"
                time.sleep(0.2)
                pids = wedged.worker_pids(lab.master.pid)
            rss_start = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
            try:
                one_round(state, pids, Path(out), times, routes, old)
                check(pids, rss_start, lab.url, serving=not wedge)
            except (AssertionError, RuntimeError, psutil.NoSuchProcess):
                text = log.read_text()
                timed_out = [pid for pid in pids if f"WORKER TIMEOUT (pid:{pid})" in text]
                if not timed_out:
                    raise
                replaced += len(timed_out)
                continue
            done += 1
            if done % 10 == 0:
                print(f"  {state}: {done} rounds", flush=True)
    if wedge:
        pids = wedged.worker_pids(lab.master.pid)
        still = [pid for pid in pids if wedged.asleep(pid)]
        print(f"  wedged after the rounds: {len(still)}/{len(pids)} workers asleep", flush=True)
    if replaced:
        print(f"  {state}: {replaced} worker(s) replaced by gunicorn (WORKER TIMEOUT)", flush=True)
    return replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attaches", type=int, default=10, help="rounds per state")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--old", action="store_true", help="also time memray's own route")
    parser.add_argument("--states", default="idle,healthy,wedged", help="which, in order")
    args = parser.parse_args()
    old = args.old and breakpoint_route_unsafe("gdb") is None
    if args.old and not old:
        print(f"--old skipped: {breakpoint_route_unsafe('gdb')}")
    times: Times = defaultdict(list)
    routes: dict[str, set[str]] = defaultdict(set)
    with wedged.lab(args.workers) as (lab, pids):
        url = lab.url
        print(f"lab: held mode, {len(pids)} workers {pids}, pool_timeout 30 s", flush=True)
        # idle first and wedged last: a wedged held-mode worker drains its queued requests
        # one pool_timeout (30 s) at a time, minutes after the load stops
        budget = args.attaches * 4.0 + 20
        if "idle" in args.states:
            run_state("idle", lab, args.attaches, times, routes, old)
        if "healthy" in args.states:
            with wedged.load(url, wedged.HEALTHY_USERS, seconds=budget):
                run_state("healthy", lab, args.attaches, times, routes, old)
        if "wedged" in args.states:
            with wedged.load(url, wedged.OVERLOAD_USERS, seconds=args.attaches * 10.0 + 60):
                run_state("wedged", lab, args.attaches, times, routes, old, wedge=True)
    print(f"\n{'state':<8} {'probe':<20} {'worker':>7} {'n':>3} {'median s':>9} {'max s':>7}")
    for (state, probe, pid), values in sorted(times.items(), key=lambda i: i[0]):
        print(
            f"{state:<8} {probe:<20} {pid:>7} {len(values):>3} "
            f"{statistics.median(values):>9.2f} {max(values):>7.2f}"
        )
    worst = max(max(v) for v in times.values())
    print(f"\nroutes: {dict(routes)}; worst time to live: {worst:.2f} s (goal: 5 s)")


if __name__ == "__main__":
    main()
