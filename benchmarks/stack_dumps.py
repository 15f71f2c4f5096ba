"""How fast ``py-spy dump`` goes per worker, and what it costs the worker.

Three measurements, printed as tables:

1. Dumps per second, back to back, against a target with 1, 10 and 50 threads
   (each sleeping a few calls deep), blocking (the default, pauses the target)
   and ``--nonblocking``; with the median and p95 of one dump's wall time.
2. The cost to the target: a CPU-bound loop reports its iteration count and
   its longest stall every 0.1 s on stdout; dumps at 1 Hz, 10 Hz and back to
   back each alternate ``--cycles`` times with a no-dump window of
   ``--window`` seconds against the same process, and are compared with those
   neighbouring windows only (the loop's rate alone swings 2x on a VM).
3. One round over several workers: sequential versus one thread per worker,
   which is what ``periodic_dumps`` does.

Run: python benchmarks/stack_dumps.py [--seconds 3] [--threads 1 10 50] [--workers 4]
     [--cycles 5] [--window 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from profiler.capture.processes import spawn_python_until_ready, stop_pid
from profiler.capture.stacks import dump, periodic_dumps

SLEEPERS = """
import threading, time

def lab_depth(n):
    if n == 0:
        while True:
            time.sleep(1)
    lab_depth(n - 1)

for i in range(THREADS - 1):
    threading.Thread(target=lab_depth, args=(5,), daemon=True).start()
print("ready", flush=True)
lab_depth(5)
"""

COUNTER = """
import time

def lab_busy_loop_marker():
    n, longest = 0, 0.0
    last = time.monotonic()
    next_report = last + 0.1
    print("ready", flush=True)
    while True:
        for _ in range(10_000):
            n += 1
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
        if now >= next_report:
            print(now, n, longest, flush=True)
            next_report, longest = now + 0.1, 0.0

lab_busy_loop_marker()
"""


def spawn(code: str, threads: int = 1) -> subprocess.Popen[str]:
    return spawn_python_until_ready(code.replace("THREADS", str(threads)))


def stop(child: subprocess.Popen[str]) -> None:
    stop_pid(child.pid)
    child.communicate(timeout=10)


def back_to_back(pid: int, seconds: float, *, nonblocking: bool) -> tuple[float, float, float]:
    """Dumps per second, median and p95 seconds per dump."""
    durations: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        samples = dump(pid, nonblocking=nonblocking)
        durations.append(time.perf_counter() - started)
        assert samples, "py-spy found no threads"
    total = sum(durations)
    p95 = statistics.quantiles(durations, n=20)[-1] if len(durations) >= 20 else max(durations)
    return len(durations) / total, statistics.median(durations), p95


def measure_speed(threads: list[int], seconds: float) -> None:
    print(f"\n## py-spy dump back to back ({seconds:g} s each)\n")
    print("| threads | mode | dumps/s | median ms | p95 ms | samples/dump |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in threads:
        child = spawn(SLEEPERS, n)
        try:
            count = len(dump(child.pid))
            for nonblocking in (False, True):
                rate, median, p95 = back_to_back(child.pid, seconds, nonblocking=nonblocking)
                mode = "nonblocking" if nonblocking else "blocking"
                print(
                    f"| {n} | {mode} | {rate:.1f} | {median * 1000:.1f} | {p95 * 1000:.1f} "
                    f"| {count} |"
                )
        finally:
            stop(child)


class RateReader:
    """Collects the counter's ``monotonic count longest-gap`` lines in a thread."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.points: list[tuple[float, int, float]] = []
        self._child = child
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._child.stdout is not None
        for line in self._child.stdout:
            at, count, longest = line.split()
            self.points.append((float(at), int(count), float(longest)))

    def window(self, start: float, end: float) -> tuple[int, float, float]:
        """Iterations, seconds and the longest stall between two instants of the monotonic clock.

        The target's ``time.monotonic`` and ours read the same system clock.
        """
        inside = [p for p in list(self.points) if start <= p[0] <= end]
        if len(inside) < 2:
            return 0, 0.0, 0.0
        return (
            inside[-1][1] - inside[0][1],
            inside[-1][0] - inside[0][0],
            max(p[2] for p in inside[1:]),
        )


def measure_cost(cycles: int, window: float) -> None:
    """Each mode alternates with a no-dump window ``cycles`` times; ratios are of the pairs.

    On a VM the loop's own rate swings by 2x within seconds with nothing else
    running, so a mode is only ever compared with the baseline windows next
    to it, summed over many pairs.
    """
    child = spawn(COUNTER)
    reader = RateReader(child)

    def idle() -> int:
        time.sleep(window)
        return 0

    def at(hz: float) -> Callable[[], int]:
        def run() -> int:
            end = time.monotonic() + window
            samples = sum(1 for _ in periodic_dumps([child.pid], interval=1 / hz, seconds=window))
            time.sleep(max(0.0, end - time.monotonic()))  # the last tick's interval is idle too
            return samples

        return run

    def flat_out(nonblocking: bool) -> Callable[[], int]:
        def run() -> int:
            deadline, dumps = time.monotonic() + window, 0
            while time.monotonic() < deadline:
                dump(child.pid, nonblocking=nonblocking)
                dumps += 1
            return dumps

        return run

    def timed(run: Callable[[], int]) -> tuple[int, int, float, float]:
        start = time.monotonic()
        dumps = run()
        end = time.monotonic()
        time.sleep(0.15)  # the reader has the window's last report
        return (dumps, *reader.window(start, end))

    modes: list[tuple[str, Callable[[], int]]] = [
        ("1 Hz", at(1)),
        ("10 Hz", at(10)),
        ("back to back", flat_out(False)),
        ("back to back, nonblocking", flat_out(True)),
    ]
    rows: list[tuple[str, float, float, float, float, int]] = []
    try:
        time.sleep(0.5)  # let the loop warm up
        for name, run in modes:
            base_n = base_s = mode_n = mode_s = 0.0
            base_stall = mode_stall = 0.0
            dumps = 0
            for _ in range(cycles):
                _, n, s, stall = timed(idle)
                base_n, base_s, base_stall = base_n + n, base_s + s, max(base_stall, stall)
                d, n, s, stall = timed(run)
                mode_n, mode_s, mode_stall = mode_n + n, mode_s + s, max(mode_stall, stall)
                dumps += d
            base_rate, mode_rate = base_n / base_s, mode_n / mode_s
            rows.append((name, base_rate, mode_rate, base_stall, mode_stall, dumps))
    finally:
        stop(child)
    print(
        f"\n## Cost to the target: a CPU-bound loop, {cycles} x ({window:g} s no dumps, "
        f"{window:g} s dumps) per mode\n"
    )
    print(
        "| dumps | loop it/s, no dumps | loop it/s, dumps | ratio "
        "| longest stall ms, no dumps | longest stall ms, dumps | samples |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, base_rate, mode_rate, base_stall, mode_stall, dumps in rows:
        print(
            f"| {name} | {base_rate:,.0f} | {mode_rate:,.0f} | {mode_rate / base_rate:.1%} "
            f"| {base_stall * 1000:.1f} | {mode_stall * 1000:.1f} | {dumps} |"
        )


def measure_round(workers: int, rounds: int) -> None:
    children = [spawn(SLEEPERS, 10) for _ in range(workers)]
    pids = [child.pid for child in children]
    try:
        sequential = []
        for _ in range(rounds):
            started = time.perf_counter()
            for pid in pids:
                dump(pid)
            sequential.append(time.perf_counter() - started)
        concurrent = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in range(rounds):
                started = time.perf_counter()
                list(pool.map(dump, pids))
                concurrent.append(time.perf_counter() - started)
    finally:
        for child in children:
            stop(child)
    print(f"\n## One round over {workers} workers of 10 threads (median of {rounds})\n")
    print("| schedule | round ms |")
    print("|---|---:|")
    print(f"| sequential | {statistics.median(sequential) * 1000:.1f} |")
    print(f"| one thread per worker | {statistics.median(concurrent) * 1000:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--window", type=float, default=1.0)
    args = parser.parse_args()
    measure_speed(args.threads, args.seconds)
    measure_cost(args.cycles, args.window)
    measure_round(args.workers, rounds=10)


if __name__ == "__main__":
    main()
