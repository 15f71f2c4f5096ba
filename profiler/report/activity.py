"""JSON shapes of activity data (``../shared/CLI.md``): stable, sorted, documented."""

from __future__ import annotations

from typing import Any

from profiler.analysis.activity import Limits, Violation, by_state, oldest_idle_in_transaction
from profiler.model import ActivitySample, Owner, Snapshot, as_datetime


def _time(epoch: float | None) -> str | None:
    moment = as_datetime(epoch)
    return None if moment is None else moment.isoformat()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def owner_json(owner: Owner | None) -> dict[str, Any] | None:
    return None if owner is None else owner.to_json()


def backend_json(
    backend: ActivitySample, owner: Owner | None, blocked_by: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Every field of the row, times as ISO 8601 with offset, ages in seconds."""
    return {
        "pid": backend.pid,
        "leader_pid": backend.leader_pid,
        "datname": backend.datname,
        "usename": backend.usename,
        "application_name": backend.application_name,
        "client_addr": backend.client_addr,
        "client_hostname": backend.client_hostname,
        "client_port": backend.client_port,
        "backend_start": _time(backend.backend_start),
        "xact_start": _time(backend.xact_start),
        "query_start": _time(backend.query_start),
        "state_change": _time(backend.state_change),
        "state_age_seconds": _round(backend.state_age_seconds),
        "xact_age_seconds": _round(backend.xact_age_seconds),
        "wait_event_type": backend.wait_event_type,
        "wait_event": backend.wait_event,
        "state": backend.state,
        "backend_xid": backend.backend_xid,
        "backend_xmin": backend.backend_xmin,
        "query_id": backend.query_id,
        "query": backend.query,
        "query_truncated": backend.query_truncated,
        "backend_type": backend.backend_type,
        "blocked_by": list(blocked_by) if blocked_by is not None else None,
        "owner": owner_json(owner),
        # Why no process could be named, when ``owner`` is null (a Unix-socket client of a
        # PostgreSQL on another host, a closing connection, ...).
        "owner_detail": owner.detail if owner is not None and owner.pid is None else None,
    }


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "taken_at": snapshot.taken_at.isoformat(),
        "server_version": snapshot.server_version,
        "backends": [
            backend_json(b, snapshot.owners.get(b.pid), snapshot.blocked_by.get(b.pid))
            for b in snapshot.backends
        ],
        "summary": {
            "by_state": {
                state: {"count": s.backends, "oldest_seconds": _round(s.oldest_seconds)}
                for state, s in by_state(snapshot).items()
            },
            "oldest_idle_in_tx_seconds": _round(oldest_idle_in_transaction(snapshot)),
        },
    }


def check_json(limits: Limits, found: list[Violation], snapshots: int) -> dict[str, Any]:
    return {
        "ok": not found,
        "snapshots": snapshots,
        "limits": {
            "max_idle_in_tx_age": limits.max_idle_in_tx_age,
            "max_idle_in_tx": limits.max_idle_in_tx,
        },
        "violations": [
            {
                "rule": v.rule,
                "pid": v.backend.pid,
                "state": v.backend.state,
                "age_seconds": _round(v.age_seconds),
                "seen_at": v.snapshot_at,
                "application_name": v.backend.application_name,
                "client_addr": v.backend.client_addr,
                "client_port": v.backend.client_port,
                "query": v.backend.query,
                "owner": owner_json(v.owner),
            }
            for v in found
        ],
    }
