"""``session run``: every probe started together, stopped together, one folder.

The window is the session's: probes start together, and the duration counts
from the moment every probe is live (the task sampler and memray once injected
into every worker; a probe that failed or is not live after
:data:`LIVE_WAIT_SECONDS` is declared degraded and the window starts without
it), so ``-d 30`` is 30 s of task samples however long attaching took. Each
probe's ``live_at`` and the manifest's ``window_started_at`` record it. They
run until the duration ends or the stop event is set (Ctrl-C, SIGTERM), and
are then stopped together. The activity recording is
converted to a columnar file at the end so a long session loads in seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.model import Worker
from profiler.session.manifest import Manifest, SessionSettings, now
from profiler.session.probes import (
    CpuProbe,
    MemProbe,
    PgProbe,
    Probe,
    RssProbe,
    StacksProbe,
    TasksProbe,
    WorkersProbe,
)

JOIN_SECONDS = 60.0
LIVE_WAIT_SECONDS = 120.0


def build_probes(
    directory: Path,
    stop: threading.Event,
    dsn: str,
    pids: list[int],
    settings: SessionSettings,
    warn: Callable[[str], None],
    *,
    master_pid: int | None = None,
    pgbouncer: str | None = None,
) -> list[Probe]:
    debugger_free = threading.Event()
    probes: list[Probe] = [
        PgProbe(directory, stop, dsn, settings.pg_interval, warn, pgbouncer=pgbouncer),
        StacksProbe(directory, stop, pids, settings.dump_interval),
        RssProbe(directory, stop, pids, settings.rss_interval),
        WorkersProbe(directory, stop, pids, master_pid),
    ]
    if settings.tasks:
        probes.append(
            TasksProbe(
                directory, stop, pids, settings.task_interval, settings.duration, debugger_free
            )
        )
    else:
        debugger_free.set()
    if settings.cpu:
        probes.append(CpuProbe(directory, stop, pids, settings.cpu_rate))
    if settings.mem:
        probes.append(MemProbe(directory, stop, pids, settings, debugger_free))
    return probes


@dataclass(frozen=True, slots=True)
class PreparedSession:
    """A session ready to run: its manifest (targets, settings) and its probes, not started."""

    directory: Path
    manifest: Manifest
    probes: list[Probe]
    stop: threading.Event


def prepare_session(
    directory: Path,
    dsn: str,
    found: list[Worker],
    settings: SessionSettings,
    warn: Callable[[str], None],
    *,
    pgbouncer: str | None = None,
) -> PreparedSession:
    """The manifest and probes for the workers among ``found`` (masters are followed, not
    profiled: their new children are the replacements of workers that die)."""
    from profiler.pg.dsn import redact
    from profiler.targets.oom import memory_limit

    workers = [w for w in found if w.role != "master"]
    pids = [w.pid for w in workers]
    manifest = Manifest(
        name=directory.name,
        started_at=now(),
        settings=settings,
        dsn=redact(dsn),
        targets=[
            {
                "pid": w.pid,
                "role": w.role,
                "cmdline": w.cmdline,
                "memory_limit": memory_limit(w.pid),
                "container": w.container,  # pod/NAME, docker/NAME, a cgroup id, or null
                "ns_pid": w.ns_pid,  # its PID inside its own PID namespace
            }
            for w in workers
        ],
        tools=tool_versions(),
    )
    stop = threading.Event()
    probes = build_probes(
        directory,
        stop,
        dsn,
        pids,
        settings,
        warn,
        master_pid=master_of(found, pids),
        pgbouncer=pgbouncer,
    )
    return PreparedSession(directory, manifest, probes, stop)


def master_of(found: list[Worker], pids: list[int]) -> int | None:
    """The process that forks the workers (it forks their replacements too): a master among
    the targets, else the one parent every worker shares, unless that is init."""
    masters = [w.pid for w in found if w.role == "master"]
    if len(masters) == 1:
        return masters[0]
    import psutil

    parents: set[int] = set()
    for pid in pids:
        try:
            parents.add(psutil.Process(pid).ppid())
        except psutil.Error:
            continue
    if len(parents) == 1 and (parent := parents.pop()) > 1:
        return parent
    return None


def run_session(
    directory: Path,
    manifest: Manifest,
    probes: list[Probe],
    stop: threading.Event,
    *,
    tick: Callable[[float, list[Probe]], None] = lambda elapsed, probes: None,
) -> dict[str, Any]:
    """Run ``probes`` for ``manifest.settings.duration`` (None: until ``stop``); the manifest."""
    manifest.write(directory)
    duration = manifest.settings.duration
    for probe in probes:
        probe.start()
    wait_live(probes, stop, tick)
    manifest.window_started_at = now()
    manifest.write(directory)
    started = time.monotonic()
    cut_short = False
    while True:
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        if stop.is_set():
            cut_short = duration is not None
            break
        tick(elapsed, probes)
        stop.wait(0.2 if duration is None else min(0.2, max(0.0, duration - elapsed)))
    stop.set()
    for probe in probes:
        probe.join(JOIN_SECONDS)
    manifest.ended_at = now()
    manifest.interrupted = cut_short
    manifest.probes = {probe.name: probe.record for probe in probes}
    _columnar_activity(directory, manifest)
    manifest.write(directory)
    return manifest.to_json()


def wait_live(
    probes: list[Probe],
    stop: threading.Event,
    tick: Callable[[float, list[Probe]], None],
    limit: float = LIVE_WAIT_SECONDS,
) -> None:
    """Until every probe is live, ``stop`` is set or ``limit`` passes; the ones still not
    live then are marked degraded (their ``error`` says so) and the window starts anyway."""
    deadline = time.monotonic() + limit
    while not stop.is_set() and time.monotonic() < deadline:
        if all(probe.live.is_set() for probe in probes):
            return
        tick(0.0, probes)
        stop.wait(0.05)
    for probe in probes:
        if not probe.live.is_set():
            late = f"not live after {limit:g}s: the window started without it"
            probe.record.error = f"{probe.record.error}; {late}" if probe.record.error else late


def _columnar_activity(directory: Path, manifest: Manifest) -> None:
    """activity.jsonl -> activity.parquet; the JSONL stays (it is what a crash leaves)."""
    source = directory / "activity.jsonl"
    pg = manifest.probes.get("pg")
    if pg is None or not source.exists():
        return
    from profiler.session import activity_table

    try:
        rows = activity_table.convert(source, directory / "activity.parquet")
    except Exception as exc:  # the JSONL is still there and readable
        pg.error = f"{pg.error + '; ' if pg.error else ''}columnar copy failed: {exc}"
        return
    pg.files.append("activity.parquet")
    pg.facts["rows"] = rows


def tool_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from profiler import __version__

    versions: dict[str, str | None] = {"profiler": __version__}
    for name in ("py-spy", "memray", "psycopg"):
        versions[name] = None
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return versions
