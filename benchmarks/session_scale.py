"""What an hour-long session at 1,000 backends costs to convert, load, correlate and judge.

A synthetic session folder is written with the real writers
(``RecordingWriter``, ``StackLogWriter``, ``JsonlWriter`` for RSS, task samples
and worker events, ``Manifest.write``): 3,600 snapshots of 1,000 backends
(3.6 M activity rows) at 1 s, owned by 8 gunicorn workers and one uvicorn
(asyncio) worker, a few backends with no known owner or a remote one, with a
state mix of idle, short active transactions and long idle-in-transaction
episodes (20 s to 5 min, spanning many snapshots); backends reconnect now and
then (sometimes reusing their pid), one gunicorn worker is OOM-killed three
quarters of the way in and replaced (``workers.jsonl`` says so); about 100 k
stack samples (every worker dumped every 0.5 s, one or two threads; the
asyncio worker's one thread mostly idle in ``select``), an RSS point per worker
per second, and about 20 k asyncio task samples from the uvicorn worker (one
round a second: the server's own task, a task per request in a transaction,
naming its backend pid and its endpoint, one in ten naming none, and now and
then a request not yet holding a connection). Server times run 0.25 s behind
ours.

Each phase then runs in its own child process, so its peak RSS
(``getrusage`` maxrss, printed after each step: the peak so far) is its own:

- ``convert``: ``activity.jsonl`` -> ``activity.parquet`` (what ``session run``
  does at the end);
- ``jsonl``: loading the JSONL directly (what reading a killed session costs);
- ``analyse``: ``profiler.session.open``, the activity table from Parquet, the
  stack samples, RSS, task samples and worker events, each timed on its own, then
  the real ``summarize`` on that loaded session (held episodes, the hold
  attribution from task samples for the asyncio worker and thread samples for the
  others, connections held, the findings and the diagnosis); TOTAL is the sum of
  these steps;
- ``summarize``: ``summarize(profiler.session.open(dir))`` end to end, as
  ``session show`` runs it, then ``Summary.to_json()`` (``--json``).

Goal: load + correlate + findings under 10 s and 1.5 GB peak.

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
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from profiler import jsonl
from profiler.capture import task_log
from profiler.capture.stack_log import StackLogWriter
from profiler.capture.stacks import Frame, StackSample
from profiler.memory import rss as rss_log
from profiler.model import ActivitySample, Gap, Owner, Snapshot
from profiler.pg.recording import RecordingWriter
from profiler.session.manifest import Manifest, ProbeRecord, SessionSettings
from profiler.targets import membership

T0 = 1_750_000_000.0
SERVER_LAG = 0.25  # the server's clock runs this far behind ours
INTERVAL = 1.0
DUMP_INTERVAL = 0.5
TASK_INTERVAL = 1.0
WORKER_BASE = 2001
MASTER_PID = 2000
ASYNC_PID = 2101  # the uvicorn worker the task sampler runs in
ASYNC_BACKENDS = 12  # its pool; the gunicorn workers share the rest
GOAL_SECONDS = 10.0
GOAL_MB = 1500.0
SHOWN_FINDINGS = 6
SYNC_CMDLINE = "gunicorn: worker [app]"
ASYNC_CMDLINE = "uvicorn app.main:app --workers 1"


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


# -- generation --------------------------------------------------------------------------

QUERIES = [
    f"SELECT o.id, o.status, o.total, c.email FROM orders_{k % 40} AS o "
    f"JOIN customers AS c ON c.id = o.customer_id WHERE o.id = $1 /* route {k} */"
    for k in range(300)
]
APPS = ["gateway", "gateway-batch", "psql", "celery"]

# The asyncio worker's code: frames as the task sampler records them, innermost first.
APP_DIR = "/srv/app"
SITE = "/srv/venv/lib/python3.12/site-packages"
ROUTES = [  # handler, method, route, first line
    ("create_order", "POST", "/orders", 41),
    ("pay_order", "POST", "/orders/{order_id}/pay", 77),
    ("get_order", "GET", "/orders/{order_id}", 25),
    ("refund_order", "POST", "/orders/{order_id}/refund", 103),
    ("search_orders", "GET", "/search", 140),
]
ROUTE_OF = [0, 0, 0, 0, 1, 1, 1, 2, 3, 4]  # a transaction's route, by task id: skewed
FASTAPI = [["run_endpoint_function", f"{SITE}/fastapi/routing.py", 212],
           ["app", f"{SITE}/fastapi/routing.py", 301]]  # fmt: skip
MAIN_TASK = [["main_loop", f"{SITE}/uvicorn/server.py", 239],
             ["_serve", f"{SITE}/uvicorn/server.py", 89],
             ["serve", f"{SITE}/uvicorn/server.py", 68]]  # fmt: skip


def handler_frame(route: int, offset: int) -> list[Any]:
    name, _, _, line = ROUTES[route]
    return [name, f"{APP_DIR}/app/routes.py", line + offset]


def downstream_frames(route: int) -> list[list[Any]]:
    """Idle in transaction: the request awaits a downstream HTTP call, connection held."""
    return [
        ["_send_single_request", f"{SITE}/httpx/_client.py", 1729],
        ["send", f"{SITE}/httpx/_client.py", 1629],
        ["post", f"{SITE}/httpx/_client.py", 1144],
        ["notify_ledger", f"{APP_DIR}/app/downstream.py", 31],
        handler_frame(route, 6),
        *FASTAPI,
    ]


def query_frames(route: int) -> list[list[Any]]:
    """Active: the request awaits its query."""
    return [
        ["execute", f"{SITE}/sqlalchemy/ext/asyncio/session.py", 461],
        ["load_order", f"{APP_DIR}/app/repo.py", 22],
        handler_frame(route, 3),
        *FASTAPI,
    ]


def dependency_frames() -> list[list[Any]]:
    """A request still resolving its dependencies: no connection yet."""
    return [
        ["decode_token", f"{APP_DIR}/app/auth.py", 18],
        ["get_current_user", f"{APP_DIR}/app/auth.py", 30],
        ["solve_dependencies", f"{SITE}/fastapi/dependencies/utils.py", 600],
        FASTAPI[1],
    ]


def endpoint(route: int) -> dict[str, Any]:
    name, method, path, line = ROUTES[route]
    return {
        "name": name,
        "filename": f"{APP_DIR}/app/routes.py",
        "line": line,
        "method": method,
        "route": path,
    }


class Fleet:
    """1,000 backends moving between idle, short transactions and long idle ones."""

    def __init__(self, backends: int, workers: list[int], rng: np.random.Generator) -> None:
        self.rng = rng
        self.size = backends
        self.pid = np.arange(30_000, 30_000 + backends, dtype=np.int64)
        self.next_pid = 30_000 + backends
        self.start = T0 - SERVER_LAG - rng.uniform(60, 3600, backends)
        self.owner_of = np.array([workers[i % len(workers)] for i in range(backends)])
        self.owner_of[:ASYNC_BACKENDS] = ASYNC_PID
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
        self.task = np.zeros(backends, dtype=np.int64)  # the asyncio task of the transaction
        self.next_task = 140_200_000_000

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
        self.task[starting] = np.arange(self.next_task, self.next_task + count)
        self.next_task += count
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
        cmdline = ASYNC_CMDLINE if worker == ASYNC_PID else f"{SYNC_CMDLINE} {worker}"
        return Owner("process", worker, cmdline)

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

    def task_round(self, taken: float, pyrng: random.Random) -> list[dict[str, Any]]:
        """The asyncio worker's tasks at ``taken``: the server's own, one per request in a
        transaction on one of its backends (the owner may be unknown to us: the task still
        names the backend), and now and then a request that holds no connection yet."""
        records: list[dict[str, Any]] = [
            {"task_id": 140_100_000_001, "task": "Task-1", "frames": MAIN_TASK,
             "awaiting": "sleep", "running": False, "backends": [], "endpoint": None}
        ]  # fmt: skip
        mine = self.in_tx & (self.owner_of == ASYNC_PID) & ~self.remote
        for i in np.flatnonzero(mine).tolist():
            task = int(self.task[i])
            route = ROUTE_OF[task % len(ROUTE_OF)]
            idle = bool(self.idle_tx[i])
            records.append(
                {
                    "task_id": task,
                    "task": f"Task-{task % 1_000_000}",
                    "frames": downstream_frames(route) if idle else query_frames(route),
                    "awaiting": "Future" if idle else "Task",
                    "running": False,
                    # one request in ten holds its connection where the sampler cannot see it
                    "backends": [] if task % 10 == 3 else [int(self.pid[i])],
                    "endpoint": endpoint(route),
                }
            )
        if pyrng.random() < 0.3:
            records.append(
                {"task_id": 140_300_000_000 + pyrng.randrange(10**6), "task": "Task-0",
                 "frames": dependency_frames(), "awaiting": "Future", "running": False,
                 "backends": [], "endpoint": endpoint(pyrng.choice(ROUTE_OF))}
            )  # fmt: skip
        for record in records:
            record.update(kind="task", taken_at=taken)
        return records


def write_activity(
    directory: Path,
    snapshots: int,
    backends: int,
    workers: list[int],
    replacement: int,
    dies_at: int,
) -> tuple[int, int]:
    """``activity.jsonl`` and, round by round beside it, the asyncio worker's task samples."""
    rng = np.random.default_rng(7)
    pyrng = random.Random(11)
    fleet = Fleet(backends, workers, rng)
    header = {"interval": INTERVAL, "server_version": 160004, "dsn": "postgresql://app@db/app"}
    task_header = {
        "pid": ASYNC_PID,
        "interval": TASK_INTERVAL,
        "duration": snapshots * INTERVAL + 30,
        "max_tasks": 500,
        "lease_seconds": 30.0,
        "python": "3.12.3",
        "task_registry": "_scheduled_tasks",
        "sys_path": [APP_DIR, SITE],
        "started_at": T0 + 0.2,
    }
    (directory / "tasks").mkdir(exist_ok=True)
    task_path = directory / "tasks" / f"tasks-{ASYNC_PID}.jsonl"
    rows = task_rows = 0
    with (
        RecordingWriter(directory / "activity.jsonl", header) as out,
        jsonl.JsonlWriter(task_path, task_log.FORMAT, task_log.VERSION, task_header) as tasks,
    ):
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
            round_at = T0 + tick * TASK_INTERVAL + 0.4  # between this snapshot and the next
            records = fleet.task_round(round_at, pyrng)
            for record in records:
                tasks.write(record)
            tasks.write(
                {"kind": "round", "taken_at": round_at, "tasks": len(records), "skipped": 0,
                 "seconds": 0.002, "cpu_seconds": 0.0015}
            )  # fmt: skip
            task_rows += len(records)
        tasks.write({"kind": "end", "taken_at": T0 + snapshots * INTERVAL, "reason": "stopped"})
    return rows, task_rows


def processes(second: float, workers: list[int], replacement: int, dies_at: int) -> list[int]:
    """The worker processes alive at ``second``: the gunicorn workers and the asyncio one."""
    return [*(workers if second < dies_at else [*workers[:-1], replacement]), ASYNC_PID]


def write_stacks(
    path: Path, snapshots: int, workers: list[int], replacement: int, dies_at: int
) -> int:
    """Every live worker dumped every 0.5 s, one or two threads, stacks 12-40 frames deep;
    the asyncio worker has one thread, its event loop, idle in ``select`` nine times in ten."""
    pyrng = random.Random(7)
    frames = [
        Frame(f"frame_{k}", f"/srv/app/module_{k % 23}.py", 10 + k, None, f"module_{k % 23}.py")
        for k in range(400)
    ]
    stacks = [tuple(pyrng.sample(frames, pyrng.randint(12, 40))) for _ in range(60)]
    loop = tuple(
        Frame(name, f"{SITE}/{file}", line, None, file)
        for name, file, line in (
            ("select", "selectors.py", 468),
            ("_run_once", "asyncio/base_events.py", 1898),
            ("run_forever", "asyncio/base_events.py", 608),
            ("run_until_complete", "asyncio/base_events.py", 641),
            ("run", "uvicorn/server.py", 65),
        )
    )
    written = 0
    with StackLogWriter(path, {"interval": DUMP_INTERVAL}) as log:
        for dump in range(int(snapshots * INTERVAL / DUMP_INTERVAL)):
            second = dump * DUMP_INTERVAL
            for worker in processes(second, workers, replacement, dies_at):
                threads = 1 if worker == ASYNC_PID or pyrng.random() < 0.25 else 2
                for thread in range(threads):
                    idle_loop = worker == ASYNC_PID and pyrng.random() < 0.9
                    log.add(
                        StackSample(
                            worker_pid=worker,
                            thread_id=140_000 + thread,
                            thread_name="MainThread" if thread == 0 else "pool-1",
                            taken_at=utc(T0 + second + 0.003),
                            dump_seconds=0.02,
                            active=not idle_loop and pyrng.random() < 0.4,
                            owns_gil=False,
                            frames=loop if idle_loop else stacks[pyrng.randrange(len(stacks))],
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
            for worker in processes(tick, workers, replacement, dies_at):
                value = 150_000_000 + tick * 10_000 + (worker - WORKER_BASE) * 1_000_000
                out.write({"kind": "rss", "pid": worker, "taken_at": when, "rss": value})
                written += 1
    return written


def write_worker_events(path: Path, workers: list[int], replacement: int, dies_at: int) -> None:
    """The last gunicorn worker OOM-killed at ``dies_at``, its replacement forked."""
    header = {
        "initial": [*workers, ASYNC_PID],
        "master_pid": MASTER_PID,
        "kernel_log": "kmsg",
        "kernel_log_problem": None,
    }
    seen = T0 + dies_at + 0.3
    dead = workers[-1]
    with jsonl.JsonlWriter(path, membership.FORMAT, membership.VERSION, header) as out:
        out.write({"time": seen, "pid": replacement, "event": "appeared"})
        out.write(
            {
                "time": seen,
                "pid": dead,
                "event": "vanished",
                "exit": "oom-killed",
                "oom_evidence": f"kernel: Memory cgroup out of memory: Killed process {dead} "
                "(gunicorn) total-vm:1203456kB, anon-rss:1040384kB",
                "cgroup": "/sys/fs/cgroup/system.slice/app.service",
                "replacement_pid": replacement,
                "returncode": -9,
            }
        )


def write_manifest(directory: Path, snapshots: int, workers: list[int]) -> None:
    settings = SessionSettings(
        duration=snapshots * INTERVAL,
        pg_interval=INTERVAL,
        dump_interval=DUMP_INTERVAL,
        rss_interval=1.0,
        cpu=False,
        mem=False,
        tasks=True,
        task_interval=TASK_INTERVAL,
    )
    targets = [
        {"pid": pid, "role": "worker", "cmdline": cmdline, "memory_limit": 2**30}
        for pid, cmdline in [
            *((w, f"{SYNC_CMDLINE} {w}") for w in workers),
            (ASYNC_PID, ASYNC_CMDLINE),
        ]
    ]
    files = {
        "pg": ["activity.jsonl", "activity.parquet"],
        "stacks": ["stacks.jsonl"],
        "rss": ["rss.jsonl"],
        "tasks": [f"tasks/tasks-{ASYNC_PID}.jsonl"],
        "workers": ["workers.jsonl"],
    }
    manifest = Manifest(
        name="scale",
        started_at=utc(T0),
        settings=settings,
        dsn="postgresql://app@db/app",
        targets=targets,
        tools={},
        ended_at=utc(T0 + snapshots * INTERVAL),
        interrupted=False,
        probes={name: ProbeRecord("ok", None, names) for name, names in files.items()},
    )
    manifest.write(directory)


def generate(directory: Path, snapshots: int, backends: int, workers: int) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    pids = [WORKER_BASE + w for w in range(workers)]
    replacement = WORKER_BASE + workers  # takes over from the worker that dies
    dies_at = int(snapshots * 0.75)
    args = (pids, replacement, dies_at)
    rows, task_rows = write_activity(directory, snapshots, backends, *args)
    sizes: dict[str, Any] = {
        "activity rows": rows,
        "task samples": task_rows,
        "stack samples": write_stacks(directory / "stacks.jsonl", snapshots, *args),
        "rss points": write_rss(directory / "rss.jsonl", snapshots, *args),
    }
    write_worker_events(directory / "workers.jsonl", *args)
    write_manifest(directory, snapshots, pids)
    for name in ("activity.jsonl", "stacks.jsonl", f"tasks/tasks-{ASYNC_PID}.jsonl"):
        sizes[f"{name} MB"] = round((directory / name).stat().st_size / 1e6, 1)
    return sizes


# -- phases, each in its own process ------------------------------------------------------


def peak_mb() -> float:
    """This process's peak RSS so far, in MB (10^6 bytes; ``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


class Steps:
    """Each step's wall time and the process's peak RSS once it is done."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []

    def __call__(self, name: str, call: Any) -> Any:
        started = time.perf_counter()
        result = call()
        self.rows.append([name, time.perf_counter() - started, peak_mb()])
        return result


def phase_convert(directory: Path) -> dict[str, Any]:
    from profiler.session import activity_table

    step = Steps()
    rows = step(
        "convert JSONL -> Parquet",
        lambda: activity_table.convert(
            directory / "activity.jsonl", directory / "activity.parquet"
        ),
    )
    return {
        "steps": step.rows,
        "measures": {
            "rows": rows,
            "activity.parquet MB": (directory / "activity.parquet").stat().st_size / 1e6,
        },
    }


def phase_jsonl(directory: Path) -> dict[str, Any]:
    from profiler.session import activity_table

    step = Steps()
    frame = step(
        "load activity from JSONL",
        lambda: activity_table.frame_from_jsonl(directory / "activity.jsonl"),
    )
    return {
        "steps": step.rows,
        "measures": {"rows": len(frame), "frame MB": frame.memory_usage(deep=True).sum() / 1e6},
    }


def phase_analyse(directory: Path) -> dict[str, Any]:
    """The loads one by one, then the real :func:`summarize` on the loaded session: what
    is left of its time is correlation, attribution, findings and the diagnosis."""
    import profiler.session
    from profiler.session.summary import summarize

    step = Steps()
    session = step("open", lambda: profiler.session.open(directory))
    activity = step("load activity (Parquet)", lambda: session.activity)
    samples = step("load stack samples (JSONL)", lambda: session.stack_samples)
    step("load RSS (JSONL)", lambda: session.rss)
    tasks = step("load task samples (JSONL)", lambda: session.task_samples)
    step("load worker events (JSONL)", lambda: session.worker_events)
    result = step(
        "summarize (episodes, attribution, findings, diagnosis)", lambda: summarize(session)
    )
    held, found = result.episodes, result.findings
    idle = held["max_idle_age"] > result.thresholds.idle_in_transaction_seconds
    return {
        "steps": step.rows,
        "measures": {
            "rows": len(activity),
            "activity frame MB": activity.memory_usage(deep=True).sum() / 1e6,
            "stack samples": len(samples),
            "task samples": len(tasks),
            "task samples naming a backend": int((tasks["backends"].map(len) > 0).sum()),
            "episodes": len(held),
            "open episodes": int(held["open"].sum()),
            "episodes idle in transaction > 1 s": int(idle.sum()),
            "episodes with no owner": int(held["owner_pid"].isna().sum()),
            "hold profile stacks": len(result.hold_profile),
            "connection-seconds attributed": round(sum(result.hold_profile.values()) / 1000),
            "connections_held rows": len(result.held),
            "findings": len(found),
            "diagnosis causes": len(result.diagnosis),
        },
        "attribution": result.attribution,
        "findings": [f"{f.severity} {f.rule}: {f.title}" for f in found],
    }


def phase_summarize(directory: Path) -> dict[str, Any]:
    import profiler.session
    from profiler.session.summary import summarize

    step = Steps()
    result = step(
        "summarize(open(dir)), end to end", lambda: summarize(profiler.session.open(directory))
    )
    document = step("Summary.to_json() + json.dumps", lambda: json.dumps(result.to_json()))
    return {
        "steps": step.rows,
        "measures": {"findings": len(result.findings), "--json MB": len(document) / 1e6},
        "attribution": result.attribution,
    }


PHASES = {
    "convert": phase_convert,
    "jsonl": phase_jsonl,
    "analyse": phase_analyse,
    "summarize": phase_summarize,
}
TOTALLED = "analyse"  # its steps are load + correlate + findings
ENDS = "summarize"  # its first step is the same, end to end


def run_phase(name: str, directory: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--dir", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"phase {name} failed (exit {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def verdict(seconds: float, peak: float) -> str:
    met = seconds < GOAL_SECONDS and peak < GOAL_MB
    return (
        f"{seconds:.2f} s, {peak:,.0f} MB peak: "
        f"{'met' if met else 'MISSED'} (goal < {GOAL_SECONDS:.0f} s and < {GOAL_MB:,.0f} MB)"
    )


def report(results: dict[str, dict[str, Any]]) -> None:
    print()
    print("| phase | step | seconds | peak RSS so far (MB) |")
    print("|---|---|---:|---:|")
    for phase, values in results.items():
        for name, seconds, peak in values["steps"]:
            print(f"| {phase} | {name} | {seconds:.2f} | {peak:,.0f} |")
        if phase == TOTALLED:
            total = sum(seconds for _, seconds, _ in values["steps"])
            peak = max(peak for _, _, peak in values["steps"])
            print(f"| {phase} | **TOTAL load + correlate + findings** | **{total:.2f}** | "
                  f"**{peak:,.0f}** |")  # fmt: skip
    print()
    print("| phase | measure | value |")
    print("|---|---|---:|")
    for phase, values in results.items():
        for name, value in values["measures"].items():
            shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
            print(f"| {phase} | {name} | {shown} |")
        if "attribution" in values:
            print(f"| {phase} | attribution | {values['attribution']} |")
    if TOTALLED in results:
        steps = results[TOTALLED]["steps"]
        print()
        found = results[TOTALLED]["findings"]
        rules = Counter(line.split(":", 1)[0] for line in found)
        print(f"findings ({', '.join(f'{n} {rule}' for rule, n in rules.most_common())}):")
        for line in found[:SHOWN_FINDINGS]:
            print(f"- {line}")
        if len(found) > SHOWN_FINDINGS:
            print(f"- ... and {len(found) - SHOWN_FINDINGS} more")
        total = sum(seconds for _, seconds, _ in steps)
        print()
        print(f"load + correlate + findings: {verdict(total, max(p for _, _, p in steps))}")
    if ENDS in results:
        _, seconds, peak = results[ENDS]["steps"][0]
        print(f"summarize end to end:        {verdict(seconds, peak)}")


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
        results = {name: run_phase(name, directory) for name in PHASES}
    finally:
        if not (args.keep or args.dir):
            shutil.rmtree(directory.parent, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
