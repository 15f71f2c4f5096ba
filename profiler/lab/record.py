"""A profiling session of the lab under load: what the demo and the acceptance tests record.

The lab comes up, a session starts on its workers (every probe), load runs on
loopback for a bounded time once the probes are in place, the load's result is
left in the session folder (``load.json``) for comparisons, and everything
stops: the session at its duration, the lab by PID, also when anything fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from profiler.errors import ProfilerError
from profiler.lab.lifecycle import LabOptions, down, up
from profiler.lab.load import run_load
from profiler.lab.settings import Mode
from profiler.pg.embedded import free_port
from profiler.session import load_record
from profiler.session.manifest import SessionSettings
from profiler.session.run import PreparedSession, prepare_session, run_session

# The reference lab: what the demo, the acceptance tests, the recorder's tests and the
# diagnosis benchmark run. A pool of 6 + 0 per worker, small enough to run dry. A checkout
# that finds the pool empty blocks the event loop (async handlers over a sync Session):
# with SQLAlchemy's 30 s default the held lab deadlocks outright instead of showing the
# slow collapse the incident had, so 0.1 s lets requests fail fast. A 2 s downstream call
# is twice the idle-in-transaction threshold (1 s): snapshots a second apart see a hold of
# L seconds at an age of at least L - 1, so it is always seen beyond the threshold.
REFERENCE_LAB = LabOptions(
    workers=2, pool_size=6, max_overflow=0, pool_timeout=0.1, downstream_latency=2.0
)
REFERENCE_USERS = 24


def reference_options(mode: Mode, dsn: str | None, **changes: Any) -> LabOptions:
    """The reference lab in ``mode`` on ``dsn``, on a free port; ``changes`` override it."""
    return replace(REFERENCE_LAB, mode=mode, dsn=dsn, port=free_port(), **changes)


WARMUP_SECONDS = 3.0  # probes started and the task sampler injected before load begins
TAIL_SECONDS = 1.0  # the session outlives the load a little, to see connections released


@dataclass(frozen=True, slots=True)
class LabSession:
    directory: Path
    manifest: dict[str, Any]
    load: load_record.LoadRecord


def session_settings(load_seconds: float, **overrides: Any) -> SessionSettings:
    """Settings whose window covers warm-up, load and tail."""
    duration = WARMUP_SECONDS + load_seconds + TAIL_SECONDS
    return SessionSettings(duration=duration, **overrides)


def _wait_window(prepared: PreparedSession, recorder: threading.Thread) -> None:
    """Until the session's window starts (every probe live, or declared degraded)."""
    while prepared.manifest.window_started_at is None and recorder.is_alive():
        time.sleep(0.1)


def record_lab_session(
    options: LabOptions,
    directory: Path,
    *,
    users: int,
    load_seconds: float,
    settings: SessionSettings,
    warn: Callable[[str], None] = lambda _: None,
    step: Callable[[str], None] = lambda _: None,
    mix: dict[str, float] | None = None,
) -> LabSession:
    """Bring the lab up with ``options``, record ``directory`` around ``users`` users for
    ``load_seconds`` (``mix``: the load's request mix, None for the default), bring the lab
    down. ``directory`` must exist and be empty. With memray on (``settings.mem``) the load
    waits for the window to start, every probe attached: memray takes seconds per worker,
    and a scenario that OOM-kills a worker must be tracked before it grows."""
    from profiler.targets.discovery import TargetSpec, find_workers

    if settings.duration is None or settings.duration < load_seconds + WARMUP_SECONDS:
        raise ProfilerError(
            "the session must outlast warm-up and load",
            hint="build settings with profiler.lab.record.session_settings",
        )
    state = up(options, step=step)
    outcome: list[dict[str, Any]] = []
    recorder: threading.Thread | None = None
    prepared = None
    try:
        if state.master is None:
            raise ProfilerError("the lab started no gateway", hint="see profiler lab status")
        found = find_workers(TargetSpec((state.master.pid,), None))
        prepared = prepare_session(directory, state.dsn, found, settings, warn)
        session = prepared

        def record() -> None:
            outcome.append(
                run_session(session.directory, session.manifest, session.probes, session.stop)
            )

        step(f"recording {directory.name}: {len(prepared.manifest.targets)} workers")
        recorder = threading.Thread(target=record, name="lab-session")
        recorder.start()
        time.sleep(WARMUP_SECONDS)
        if settings.mem:
            _wait_window(prepared, recorder)
        step(f"load: {users} users for {load_seconds:g}s")
        started = time.time()
        result = run_load(state.url, users=users, seconds=load_seconds, mix=mix)
        loaded = load_record.from_result(
            result, url=state.url, started_at=started, ended_at=time.time()
        )
        recorder.join()
        load_record.write(directory, loaded)
    finally:
        if prepared is not None and recorder is not None and recorder.is_alive():
            prepared.stop.set()  # an error (or Ctrl-C) during load: end the session now
            recorder.join()
        down()
    return LabSession(directory, outcome[0], loaded)
