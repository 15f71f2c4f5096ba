"""What profiling costs the lab gateway, and how long blocking samples stop a worker.

Two measurements, printed as Markdown tables:

1. **The lab under load** (fresh mode, 2 gunicorn/uvicorn workers, a fast
   downstream so the workers are CPU-bound, on an embedded PostgreSQL) with:
   no profiler; ``cpu record`` at 100 Hz ``--nonblocking``; at 100 Hz blocking
   with the pause guard off (py-spy's default behaviour); blocking with the
   guard on (our default); periodic ``py-spy dump`` at 1 Hz and 10 Hz.
   Every profiled window runs right after a no-profiler window and is
   compared with that one only (throughput on this VM drifts by 10-20% between
   windows); ``--cycles`` pairs per condition, median and range of the
   ratios. For each: throughput and p99 as ratios, py-spy's own CPU (seconds of CPU per second
   of wall, all workers together, from ``RUSAGE_CHILDREN`` of the reaped
   py-spys), its sampling-error rate, and how long after the window the first
   flamegraph was on disk.
2. **Blocking pause per sample** against targets with 1-100 threads: a
   CPU-bound loop measures its own stalls (gaps > 0.2 ms between iterations)
   with and without ``py-spy record`` blocking at 10 and 100 Hz; the extra
   stall per sample is compared with the model the guard uses
   (``profiler.capture.record.blocking_pause_seconds``).

Run: python benchmarks/cpu_record.py [--seconds 6] [--cycles 3] [--users 20]
     [--threads 1 10 50 100]
"""

from __future__ import annotations

import argparse
import resource
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cpu_bound_lab import cpu_bound_lab

from profiler.capture import record as recorder
from profiler.capture.processes import spawn_python_until_ready, stop_pid
from profiler.capture.stacks import DumpFailure, StackSample, periodic_dumps, resolve_pyspy
from profiler.lab.load import run_load
from profiler.session.cpu_record import artifact_paths, stamp, write_artifacts
from profiler.session.load_record import LoadResult


@dataclass
class Window:
    rps: float
    p99_ms: float
    errors: int
    pyspy_cpu: float  # CPU seconds per wall second, all py-spys together
    sample_error_rate: float | None
    first_flamegraph: float | None


class Outcome(NamedTuple):
    load: LoadResult
    pyspy_cpu_seconds: float
    sample_error_rate: float | None
    first_flamegraph: float | None


Load = Callable[[], LoadResult]
Runner = Callable[[list[int], Load], Outcome]


@dataclass
class Condition:
    name: str
    run: Runner
    windows: list[Window] = field(default_factory=list)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def no_profiler(pids: list[int], load: Load) -> Outcome:
    return Outcome(load(), 0.0, None, None)


def record_with(options: recorder.RecordOptions, seconds: float) -> Runner:
    def run(pids: list[int], load: Load) -> Outcome:
        plans = recorder.plan(pids, options)
        with tempfile.TemporaryDirectory() as out:
            paths = artifact_paths(Path(out), [p.pid for p in plans], stamp(time.time()))
            before = children_cpu()
            recording = recorder.start(
                plans, options, {pid: f.collapsed for pid, f in paths.workers.items()}
            )
            waiting = threading.Thread(target=recorder.wait, args=(recording, seconds))
            waiting.start()  # as the CLI does: py-spys signalled one sample ahead of the end
            result = load()
            waiting.join()
            recorder.stop(recording)
            cpu = children_cpu() - before
            manifest = write_artifacts(recording, paths, options, {}, interrupted=False)
        samples = sum(w.samples for w in recording.workers)
        errors = sum(w.errors for w in recording.workers)
        rate = errors / (samples + errors) if samples + errors else None
        return Outcome(result, cpu, rate, manifest["first_flamegraph_seconds"])

    return run


def dumps_at(hz: float) -> Runner:
    def run(pids: list[int], load: Load) -> Outcome:
        stop = threading.Event()
        outcomes: list[StackSample | DumpFailure] = []

        def collect() -> None:
            outcomes.extend(periodic_dumps(pids, interval=1 / hz, seconds=None, stop=stop))

        before = children_cpu()
        thread = threading.Thread(target=collect)
        thread.start()
        result = load()
        stop.set()
        thread.join()
        cpu = children_cpu() - before
        failures = sum(isinstance(o, DumpFailure) for o in outcomes)
        rounds = len({(o.worker_pid, o.taken_at) for o in outcomes})
        return Outcome(result, cpu, failures / rounds if rounds else None, None)

    return run


def measure_lab(seconds: float, cycles: int, users: int) -> None:
    with cpu_bound_lab(users) as (state, pids):

        def load() -> LoadResult:
            return run_load(state.url, users=users, seconds=seconds)

        conditions = [
            Condition("no profiler", no_profiler),
            Condition(
                "record 100 Hz --nonblocking",
                record_with(recorder.RecordOptions(100, nonblocking=True), seconds),
            ),
            Condition(
                "record 100 Hz --nonblocking --gil",
                record_with(recorder.RecordOptions(100, gil=True, nonblocking=True), seconds),
            ),
            Condition(
                "record 100 Hz blocking, guard off",
                record_with(recorder.RecordOptions(100, max_pause=0), seconds),
            ),
            Condition(
                "record 100 Hz blocking, guarded (default)",
                record_with(recorder.RecordOptions(100), seconds),
            ),
            Condition("dumps 1 Hz", dumps_at(1)),
            Condition("dumps 10 Hz", dumps_at(10)),
        ]
        guarded = recorder.plan(pids, recorder.RecordOptions(100))
        print(
            f"workers {pids}; guarded blocking rates: "
            + ", ".join(f"{p.pid}: {p.threads} threads -> {p.rate} Hz" for p in guarded)
        )
        baseline = conditions[0]
        for cycle in range(cycles):
            for condition in conditions[1:]:
                # each profiled window right after its own baseline: drift cancels
                for current in (baseline, condition):
                    outcome = current.run(pids, load)
                    current.windows.append(_window(outcome, seconds))
                    result = outcome.load
                    print(
                        f"  cycle {cycle + 1} {current.name}: {result.rps:.1f} req/s, "
                        f"p99 {result.p99_ms or 0:.0f} ms, {result.errors} errors",
                        flush=True,
                    )

    print(f"\n## The lab under load ({users} users, {seconds:g} s windows, {cycles} cycles)\n")
    print(
        "| condition | throughput (median, range) | p99 (median) | py-spy CPU | sampling errors "
        "| first flamegraph |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    base = conditions[0].windows
    print(
        f"| no profiler | {statistics.median(w.rps for w in base):.1f} req/s "
        f"| {statistics.median(w.p99_ms for w in base):.0f} ms | - | - | - |"
    )
    for index, condition in enumerate(conditions[1:]):
        # baseline windows interleave: the one before this condition's k-th window
        pairs = [
            (base[cycle * (len(conditions) - 1) + index], window)
            for cycle, window in enumerate(condition.windows)
        ]
        throughput = [w.rps / b.rps for b, w in pairs]
        p99 = [w.p99_ms / b.p99_ms for b, w in pairs if b.p99_ms]
        cpu = statistics.median(w.pyspy_cpu for w in condition.windows)
        rates = [w.sample_error_rate for w in condition.windows if w.sample_error_rate is not None]
        firsts = [w.first_flamegraph for w in condition.windows if w.first_flamegraph is not None]
        print(
            f"| {condition.name} | {statistics.median(throughput):.3f} "
            f"({min(throughput):.2f}-{max(throughput):.2f}) "
            f"| {statistics.median(p99):.2f}x | {cpu:.1%} of a core "
            f"| {f'{statistics.median(rates):.1%}' if rates else '-'} "
            f"| {f'max {max(firsts) * 1000:.0f} ms' if firsts else '-'} |"
        )


def _window(outcome: Outcome, seconds: float) -> Window:
    return Window(
        rps=outcome.load.rps,
        p99_ms=outcome.load.p99_ms or 0.0,
        errors=outcome.load.errors,
        pyspy_cpu=outcome.pyspy_cpu_seconds / seconds,
        sample_error_rate=outcome.sample_error_rate,
        first_flamegraph=outcome.first_flamegraph,
    )


STALLS = """
import sys, threading, time
for _ in range(int(sys.argv[1]) - 1):
    threading.Thread(target=threading.Event().wait, daemon=True).start()
print("ready", flush=True)
clock = time.perf_counter
while True:
    start = last = clock()
    stalled = 0.0
    while last - start < 0.5:
        now = clock()
        if now - last > 0.0002:
            stalled += now - last
        last = now
    print(stalled / (last - start), flush=True)
"""


def stalled_fraction(child: subprocess.Popen[str], reports: int) -> float:
    assert child.stdout is not None
    values = [float(child.stdout.readline()) for _ in range(reports)]
    return statistics.median(values)


def measure_pause(threads: list[int]) -> None:
    pyspy = resolve_pyspy(None)
    print("\n## Blocking pause per sample (CPU-bound target measuring its own stalls)\n")
    print("| threads | rate | stopped | extra stall per sample | model | guard rate (1%) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for count in threads:
        child = spawn_python_until_ready(STALLS.replace("int(sys.argv[1])", str(count)))
        try:
            stalled_fraction(child, 1)  # settle
            for rate in (10, 100):
                base = stalled_fraction(child, 4)
                with tempfile.TemporaryDirectory() as out:
                    spy = subprocess.Popen(
                        [
                            str(pyspy),
                            "record",
                            "--pid",
                            str(child.pid),
                            "--rate",
                            str(rate),
                            "--format",
                            "raw",
                            "--output",
                            f"{out}/raw.txt",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    stalled_fraction(child, 3)  # py-spy's start (symbols, first attach) stalls too
                    during = stalled_fraction(child, 6)
                    spy.send_signal(signal.SIGINT)
                    spy.wait(10)
                per_sample = max(0.0, during - base) / rate
                model = recorder.blocking_pause_seconds(count)
                (planned,) = recorder.plan([child.pid], recorder.RecordOptions(100))
                guard = "nonblocking" if planned.nonblocking else f"{planned.rate} Hz"
                print(
                    f"| {count} | {rate} Hz | {during:.2%} | {per_sample * 1000:.2f} ms "
                    f"| {model * 1000:.2f} ms | {guard} |",
                    flush=True,
                )
        finally:
            stop_pid(child.pid)
            child.communicate(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 10, 50, 100])
    args = parser.parse_args()
    measure_pause(args.threads)
    measure_lab(args.seconds, args.cycles, args.users)


if __name__ == "__main__":
    main()
