"""What a snapshot says about connection holding: pure functions, no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.model import IDLE_IN_TRANSACTION, ActivitySample, Owner, Snapshot


@dataclass(frozen=True, slots=True)
class StateSummary:
    backends: int
    oldest_seconds: float | None


def client_backends(snapshot: Snapshot) -> list[ActivitySample]:
    """The backends applications opened (not autovacuum, walwriter, ...)."""
    return [b for b in snapshot.backends if b.backend_type in (None, "client backend")]


def by_state(snapshot: Snapshot) -> dict[str, StateSummary]:
    """Client backends per state with the oldest time in that state, sorted by state."""
    groups: dict[str, list[ActivitySample]] = {}
    for backend in client_backends(snapshot):
        groups.setdefault(backend.state or "unknown", []).append(backend)
    summary = {}
    for state, members in sorted(groups.items()):
        ages = [a for a in (m.state_age_seconds for m in members) if a is not None]
        summary[state] = StateSummary(len(members), max(ages) if ages else None)
    return summary


def idle_in_transaction(snapshot: Snapshot) -> list[ActivitySample]:
    """Backends idle inside a transaction, oldest first: the ones holding pool slots."""
    held = [b for b in client_backends(snapshot) if b.state in IDLE_IN_TRANSACTION]
    return sorted(held, key=lambda b: (-(b.state_age_seconds or 0.0), b.pid))


def oldest_idle_in_transaction(snapshot: Snapshot) -> float | None:
    held = idle_in_transaction(snapshot)
    return held[0].state_age_seconds if held else None


@dataclass(frozen=True, slots=True)
class Limits:
    max_idle_in_tx_age: float | None = None  # seconds a backend may stay idle in transaction
    max_idle_in_tx: int | None = None  # backends that may be idle in transaction at once


@dataclass(frozen=True, slots=True)
class Violation:
    """A backend over a limit, at its worst moment within the checked window."""

    rule: str
    backend: ActivitySample
    age_seconds: float | None
    snapshot_at: str
    owner: Owner | None


def violations(snapshots: list[Snapshot], limits: Limits) -> list[Violation]:
    """Every limit broken in any snapshot; one entry per backend and rule, at its worst.

    A backend is identified by (pid, backend_start): PIDs are reused.
    """
    worst: dict[tuple[str, int, float | None], Violation] = {}
    for snapshot in snapshots:
        held = idle_in_transaction(snapshot)
        candidates: list[tuple[str, ActivitySample]] = []
        if limits.max_idle_in_tx_age is not None:
            candidates += [
                ("max-idle-in-tx-age", b)
                for b in held
                if (b.state_age_seconds or 0.0) > limits.max_idle_in_tx_age
            ]
        if limits.max_idle_in_tx is not None and len(held) > limits.max_idle_in_tx:
            candidates += [("max-idle-in-tx", b) for b in held]
        for rule, backend in candidates:
            key = (rule, backend.pid, backend.backend_start)
            seen = worst.get(key)
            if seen is None or (backend.state_age_seconds or 0.0) > (seen.age_seconds or 0.0):
                worst[key] = Violation(
                    rule,
                    backend,
                    backend.state_age_seconds,
                    snapshot.taken_at.isoformat(),
                    snapshot.owners.get(backend.pid),
                )
    return sorted(worst.values(), key=lambda v: (v.rule, -(v.age_seconds or 0.0), v.backend.pid))
