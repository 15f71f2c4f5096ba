"""The running lab, written to a small JSON file so another shell can see and stop it.

Each process is recorded with its start time: PIDs are reused, and ``lab down``
after a crash must never signal a process that merely inherited a PID.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from profiler.capture.processes import is_running
from profiler.errors import InputError
from profiler.lab.settings import Mode

STATE_DIR_ENV = "PROFILER_STATE_DIR"


@dataclass(frozen=True, slots=True)
class OwnedProcess:
    pid: int
    started_at: float  # psutil create_time, to tell our process from a PID reuse

    @property
    def running(self) -> bool:
        return is_running(self.pid, self.started_at)


@dataclass(frozen=True, slots=True)
class LabState:
    """What ``lab up`` started. ``dsn`` never carries a password."""

    mode: Mode
    dsn: str
    url: str
    downstream_url: str
    workers: int
    pool_size: int
    max_overflow: int
    pool_timeout: float
    downstream_latency: float
    log_dir: str
    postgres: OwnedProcess | None = None  # None when the user's --dsn server is used
    pgdata: str | None = None
    downstream: OwnedProcess | None = None
    master: OwnedProcess | None = None
    extra: dict[str, str] = field(default_factory=dict)
    pooler: OwnedProcess | None = None  # PgBouncer between the gateway and PostgreSQL
    pool_mode: str | None = None
    server: str = "gunicorn"  # what serves the gateway: gunicorn, granian or uvicorn
    # The master's workers once it started them: stopped by PID even when the master is gone.
    gateway_workers: list[OwnedProcess] = field(default_factory=list)
    unix_socket: bool = False  # the gateway reaches PostgreSQL through its Unix socket
    memory_cgroup: str | None = None  # the workers' cgroup with lab up --memory-limit
    memory_limit: int | None = None  # its limit, bytes

    def processes(self) -> list[tuple[str, OwnedProcess]]:
        named = [
            ("gateway", self.master),
            ("downstream", self.downstream),
            ("pgbouncer", self.pooler),
            ("postgres", self.postgres),
        ]
        return [(name, proc) for name, proc in named if proc is not None]


def state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "profiler"


def state_file() -> Path:
    return state_dir() / "lab.json"


def save(state: LabState) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)  # atomic: a crash mid-write leaves the old state, never half a file


def load() -> LabState | None:
    path = state_file()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(
            f"lab state file {path} is unreadable: {exc}",
            hint=f"stop leftover processes by hand, then delete {path}",
        ) from None
    for key in ("postgres", "downstream", "master", "pooler"):
        if raw.get(key) is not None:
            raw[key] = OwnedProcess(**raw[key])
    raw["gateway_workers"] = [OwnedProcess(**w) for w in raw.get("gateway_workers") or []]
    try:
        return LabState(**raw)
    except TypeError as exc:
        raise InputError(
            f"lab state file {path} is from another version: {exc}",
            hint=f"stop leftover processes by hand, then delete {path}",
        ) from None


def clear() -> None:
    state_file().unlink(missing_ok=True)
