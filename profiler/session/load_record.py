"""``load.json``: the load a session ran under, so a comparison can speak of throughput.

A session records workers and the database; how many requests the gateway
served meanwhile is known only to whatever drove the load. ``profiler lab load
--record-into DIR`` (or any script, with :func:`write`) leaves its result in
the session folder; ``session show`` and ``session compare`` read it when it is
there and say "no load recorded" when it is not.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from profiler.errors import InputError

LOAD_NAME = "load.json"
FORMAT = "profiler-load"
VERSION = 1


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a run measured.

    ``requests`` counts every request that finished (any status), ``errors`` those
    that failed (status >= 400, timeouts, refused connections). ``rps`` is
    successful requests per second; the percentiles are over successful requests.
    ``unfinished`` requests were still in flight when time ran out.
    """

    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    seconds: float
    users: int
    unfinished: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadRecord:
    """What drove the session: successful requests per second, latency, errors."""

    # Repeats LoadResult's fields on purpose: this is ``load.json``'s versioned format,
    # which must not change when the load generator measures more (by_status, unfinished).
    started_at: float  # epoch seconds, our clock
    ended_at: float
    url: str
    users: int
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def from_result(result: LoadResult, *, url: str, started_at: float, ended_at: float) -> LoadRecord:
    return LoadRecord(
        started_at=started_at,
        ended_at=ended_at,
        url=url,
        users=result.users,
        requests=result.requests,
        errors=result.errors,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p95_ms=result.p95_ms,
        p99_ms=result.p99_ms,
    )


def write(directory: Path, record: LoadRecord) -> Path:
    """Atomically into ``directory`` (which must exist: the session's folder)."""
    if not directory.is_dir():
        raise InputError(
            f"{directory} is not a folder", hint="pass the -o DIR of a `profiler session run`"
        )
    target = directory / LOAD_NAME
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(record.to_json(), sort_keys=True, indent=2) + "\n")
    os.replace(partial, target)
    return target


def read(directory: Path) -> LoadRecord | None:
    """The session's load record; None without ``load.json``; InputError when corrupt."""
    path = directory / LOAD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot read {path}: {exc}", hint="delete it or record the load again"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise InputError(f"{path} is not a {FORMAT} v{VERSION} record", hint="record it again")
    fields: dict[str, Any] = {name: data.get(name) for name in LoadRecord.__dataclass_fields__}
    try:
        return LoadRecord(**fields)
    except TypeError as exc:
        raise InputError(f"{path} is incomplete: {exc}", hint="record it again") from None
