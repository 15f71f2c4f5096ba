"""Activity recordings: every snapshot of a ``db watch`` (or a session), on disk.

JSON Lines (:mod:`profiler.jsonl`), one snapshot or gap per line, appended and
flushed as it is taken, so a killed capture keeps every complete line. Rows
are positional arrays under a column list given once in the header (half the
bytes of objects), and an owner is written the first time its backend
appears and again only when it changes (behind PgBouncer in transaction
pooling a backend serves another worker with each transaction). Analysis
loads a recording once into records; the session format (issue 6) converts
to columnar storage for hour-long captures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from profiler import jsonl
from profiler.jsonl import JsonlWriter
from profiler.model import ActivitySample, Gap, Owner, Snapshot

FORMAT = "profiler-activity"
VERSION = 1
COLUMNS = ActivitySample._fields


@dataclass(frozen=True, slots=True)
class Recording:
    header: dict[str, Any]
    snapshots: list[Snapshot]
    gaps: list[Gap]
    torn_tail: bool = False  # the last line was cut off (capture killed mid-write)


@dataclass
class RecordingWriter:
    """Appends snapshots and gaps to ``path``; refuses to overwrite unless told to."""

    path: Path
    header: dict[str, Any]
    force: bool = False
    _file: JsonlWriter | None = field(default=None, init=False)
    _owners_written: dict[tuple[int, float | None], Owner] = field(default_factory=dict, init=False)
    snapshots: int = field(default=0, init=False)

    def __enter__(self) -> RecordingWriter:
        header = {"columns": list(COLUMNS), **self.header}
        self._file = JsonlWriter(self.path, FORMAT, VERSION, header, force=self.force).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.__exit__(*exc)

    def add(self, item: Snapshot | Gap) -> None:
        if isinstance(item, Gap):
            self._write(
                {
                    "kind": "gap",
                    "started_at": item.started_at.isoformat(),
                    "ended_at": item.ended_at.isoformat(),
                    "reason": item.reason,
                }
            )
            return
        new_owners = {}
        for backend in item.backends:
            key = (backend.pid, backend.backend_start)
            owner = item.owners.get(backend.pid)
            if owner is not None and self._owners_written.get(key) != owner:
                self._owners_written[key] = owner
                new_owners[str(backend.pid)] = owner.to_record()
        self._write(
            {
                "kind": "snapshot",
                "taken_at": item.taken_at.isoformat(),
                "server_version": item.server_version,
                "fetch_seconds": round(item.fetch_seconds, 6),
                "owner_seconds": round(item.owner_seconds, 6),
                "rows": [[getattr(b, c) for c in COLUMNS] for b in item.backends],
                "owners": new_owners,
                "blocked_by": {str(pid): list(by) for pid, by in item.blocked_by.items()},
            }
        )
        self.snapshots += 1

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "use the writer as a context manager"
        self._file.write(record)


def read(path: Path) -> Recording:
    """Load a recording; a torn last line is dropped, anything else corrupt is an error."""
    loaded = jsonl.read(path, format=FORMAT, version=VERSION, hint="pass a db watch -o file")
    header = loaded.header
    columns = header["columns"]
    owners: dict[tuple[int, float | None], Owner] = {}  # by backend identity: PIDs are reused
    snapshots: list[Snapshot] = []
    gaps: list[Gap] = []
    for record in loaded.records:
        if record["kind"] == "gap":
            gaps.append(
                Gap(
                    datetime.fromisoformat(record["started_at"]),
                    datetime.fromisoformat(record["ended_at"]),
                    record["reason"],
                )
            )
            continue
        backends = tuple(_sample(columns, row) for row in record["rows"])
        keys = {b.pid: (b.pid, b.backend_start) for b in backends}
        for pid, owner in record["owners"].items():
            owners[keys[int(pid)]] = Owner.from_record(owner)
        snapshots.append(
            Snapshot(
                taken_at=datetime.fromisoformat(record["taken_at"]),
                server_version=record["server_version"],
                backends=backends,
                owners={pid: owners[key] for pid, key in keys.items() if key in owners},
                blocked_by={int(p): tuple(by) for p, by in record["blocked_by"].items()},
                fetch_seconds=record["fetch_seconds"],
                owner_seconds=record["owner_seconds"],
            )
        )
    return Recording(header=header, snapshots=snapshots, gaps=gaps, torn_tail=loaded.torn_tail)


def _sample(columns: list[str], row: list[Any]) -> ActivitySample:
    return ActivitySample(**dict(zip(columns, row, strict=True)))
