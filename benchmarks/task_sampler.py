"""What the injected asyncio task sampler costs a worker, measured in one run.

The target is an asyncio worker with ``--tasks`` request-like tasks, each three
coroutines deep, holding a small request object (headers, state, a scope of
nested dicts) in its locals, doing a little CPU work then ``await
asyncio.sleep(PAUSE)`` in a loop; it prints its total iteration count every 0.1 s.
Two workers: saturated (``PAUSE`` 0: the loop never idles, the worst case for a
thread that needs the GIL) and I/O-bound (``PAUSE`` 10 ms: the loop waits in
``epoll`` part of the time, as a gateway waiting on its database does).

For each sampling rate (10 Hz and 2 Hz) the sampler is injected ``--cycles``
times for a ``--window``-second window, each sampled window paired with a
no-sampler window just before it in the same process (a VM's own rate swings
too much to compare runs). The injection itself (gdb stops the worker for
~0.5-1.5 s) is kept out of the windows: it is reported on its own line. The
sampler's own cost per round comes from its ``round`` lines (``seconds``).

Run: python benchmarks/task_sampler.py [--tasks 200] [--window 3] [--cycles 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from profiler.capture import task_control, task_inject, task_log
from profiler.capture.processes import spawn_python_until_ready, stop_pid

WORKER = """
import asyncio, time

TASKS = {tasks}
count = 0


class Request:
    def __init__(self, number):
        self.headers = {{f"x-header-{{k}}": "v" * 20 for k in range(20)}}
        self.state = {{"user": number, "tags": list(range(30))}}
        self.scope = {{"path": "/items", "items": [{{"k": k}} for k in range(10)]}}


async def bench_leaf(request):
    global count
    while True:
        total = 0
        for k in range(200):
            total += k
        count += 1
        await asyncio.sleep({pause})


async def bench_middle(request):
    await bench_leaf(request)


async def bench_handler(number):
    request = Request(number)
    await bench_middle(request)


async def main():
    running = [asyncio.create_task(bench_handler(n)) for n in range(TASKS)]
    print("ready", flush=True)
    while True:
        await asyncio.sleep(0.1)
        print(time.monotonic(), count, flush=True)


asyncio.run(main())
"""


class RateReader:
    """Collects the worker's ``monotonic count`` lines in a thread."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.points: list[tuple[float, int]] = []
        self._child = child
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._child.stdout is not None
        for line in self._child.stdout:
            at, count = line.split()
            self.points.append((float(at), int(count)))

    def window(self, start: float, end: float) -> tuple[int, float]:
        """Iterations and seconds between two instants of the (shared) monotonic clock."""
        inside = [p for p in list(self.points) if start <= p[0] <= end]
        if len(inside) < 2:
            return 0, 0.0
        return inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0]


Row = tuple[str, float, float, list[float], list[float], list[int], list[float]]


def measure(task_count: int, pause: float, window: float, cycles: int) -> list[Row]:
    """Per rate: baseline and sampled it/s, round wall and CPU seconds, tasks, injection s."""
    child = spawn_python_until_ready(WORKER.format(tasks=task_count, pause=pause))
    reader = RateReader(child)
    rows: list[Row] = []
    try:
        time.sleep(1.0)  # warm up
        with tempfile.TemporaryDirectory(prefix="task-sampler-bench-") as folder:
            for hz in (10, 2):
                base_n = base_s = mode_n = mode_s = 0.0
                walls: list[float] = []
                cpus: list[float] = []
                counts: list[int] = []
                injections: list[float] = []
                for cycle in range(cycles):
                    start = time.monotonic()
                    time.sleep(window)
                    n, s = reader.window(start, time.monotonic())
                    base_n, base_s = base_n + n, base_s + s
                    path = Path(folder) / f"tasks-{hz}-{cycle}.jsonl"
                    began = time.monotonic()
                    task_inject.inject(child.pid, path, interval=1 / hz, duration=window + 30)
                    injections.append(time.monotonic() - began)
                    time.sleep(0.3)  # out of the debugger's stop
                    start = time.monotonic()
                    time.sleep(window)
                    n, s = reader.window(start, time.monotonic())
                    mode_n, mode_s = mode_n + n, mode_s + s
                    task_control.request_stop(path)
                    assert task_control.wait_for_end([path], timeout=30) == [], (
                        "sampler did not end"
                    )
                    rounds = task_log.read_rounds(path)
                    walls += rounds["seconds"].tolist()
                    cpus += rounds["cpu_seconds"].tolist()
                    counts += rounds["tasks"].tolist()
                    time.sleep(0.3)
                rows.append(
                    (f"{hz} Hz", base_n / base_s, mode_n / mode_s, walls, cpus, counts, injections)
                )
    finally:
        stop_pid(child.pid)
        child.communicate(timeout=10)
    return rows


def _ms(values: list[float]) -> tuple[float, float]:
    """Median and p95, in milliseconds."""
    p95 = statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)
    return statistics.median(values) * 1000, p95 * 1000


def run(task_count: int, window: float, cycles: int) -> None:
    loads = [("saturated, await sleep(0)", 0.0), ("I/O-bound, await sleep(0.01)", 0.01)]
    results = [(name, measure(task_count, pause, window, cycles)) for name, pause in loads]
    print(f"\n## Worker throughput with the task sampler ({task_count} tasks)\n")
    print(f"{cycles} x {window:g} s sampled windows per rate, each against the window before it.\n")
    print("| worker | rate | baseline it/s | sampled it/s | change | rounds | tasks/round |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for load, rows in results:
        for name, base, sampled, walls, _, counts, _ in rows:
            change = (sampled / base - 1) * 100
            print(
                f"| {load} | {name} | {base:,.0f} | {sampled:,.0f} | {change:+.1f}% "
                f"| {len(walls)} | {statistics.median(counts):.0f} |"
            )
    print("\n## The sampler's own time per round (from its round lines)\n")
    print(
        "| worker | rate | CPU ms median | CPU ms p95 | CPU us per task "
        "| wall ms median | wall ms p95 | injection s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for load, rows in results:
        for name, _, _, walls, cpus, counts, injections in rows:
            cpu_median, cpu_p95 = _ms(cpus)
            wall_median, wall_p95 = _ms(walls)
            per_task = cpu_median * 1000 / max(1.0, statistics.median(counts))
            print(
                f"| {load} | {name} | {cpu_median:.2f} | {cpu_p95:.2f} | {per_task:.1f} "
                f"| {wall_median:.2f} | {wall_p95:.2f} | {statistics.median(injections):.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args()
    run(args.tasks, args.window, args.cycles)


if __name__ == "__main__":
    main()
