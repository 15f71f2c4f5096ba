"""A session's ``manifest.json``: what ran, where, with which tools, and how each probe fared.

Written when the session starts (``ended_at`` null) and rewritten when it
ends, so a session whose recorder was killed still says what it was. Never
holds a password: the DSN is redacted before it gets here.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FORMAT = "profiler-session"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass(slots=True)
class ProbeRecord:
    """How one probe fared.

    ``status``: ``ok``, ``partial`` (ran, but lost some data: see ``error``),
    ``failed`` or ``skipped``.
    """

    status: str = "pending"
    error: str | None = None
    files: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    live_at: str | None = None  # UTC ISO time it began capturing (after attaching), or None


@dataclass(slots=True)
class SessionSettings:
    duration: float | None
    pg_interval: float = 1.0
    dump_interval: float = 1.0
    rss_interval: float = 0.5
    cpu: bool = True
    cpu_rate: int = 100
    mem: bool = False
    mem_aggregate: bool = False
    mem_native: bool = False
    lend_memray: bool = False
    tasks: bool = True
    task_interval: float = 0.2
    pool_capacity: int | None = None  # pool_size + max_overflow per worker, when told


@dataclass(slots=True)
class Manifest:
    name: str
    started_at: datetime
    settings: SessionSettings
    dsn: str | None
    targets: list[dict[str, Any]]
    tools: dict[str, str | None]
    ended_at: datetime | None = None
    window_started_at: datetime | None = None  # every probe live (or declared degraded)
    interrupted: bool | None = None
    probes: dict[str, ProbeRecord] = field(default_factory=dict)
    # Top-level keys a particular writer adds (a flight recorder's ``incident``); readers
    # that do not know them ignore them.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "started_at": self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "window_started_at": (
                None if self.window_started_at is None else self.window_started_at.isoformat()
            ),
            "interrupted": self.interrupted,
            "host": host_facts(),
            "tools": self.tools,
            "settings": asdict(self.settings),
            "dsn": self.dsn,
            "targets": self.targets,
            "probes": {name: asdict(record) for name, record in self.probes.items()},
        }

    def write(self, directory: Path) -> None:
        """Atomically: a reader never sees half a manifest."""
        target = directory / MANIFEST
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.to_json(), sort_keys=True, indent=2) + "\n")
        os.replace(partial, target)


def host_facts() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def now() -> datetime:
    return datetime.now(timezone.utc)
