"""The flight recorder's pure parts: live rules on made-up streams, sizes, the ring, retention.

No PostgreSQL, no ptrace: snapshots and stack samples are built as the sampler
and py-spy would give them, with times chosen so each threshold is crossed at a
known instant.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from profiler.capture.stacks import Frame, StackSample
from profiler.errors import UsageError
from profiler.model import Owner, Snapshot
from profiler.watch import retention
from profiler.watch.ring import Ring
from profiler.watch.rules import LiveRules, checked_out
from profiler.watch.settings import RuleSettings, WatchSettings, parse_size
from tests.helpers import client_backend

T0 = 1_800_000_000.0
SKEW = 0.25  # the server's clock runs this far behind ours


def snapshot(at: float, backends: dict[int, tuple[str, float]], owners: dict[int, int]) -> Snapshot:
    """At ``at`` (our clock): backend pid -> (state, since when on our clock), owned by pids."""
    rows = tuple(
        client_backend(
            at - SKEW,
            pid,
            state=state,
            backend_start=T0 - 100,
            query_start=since - SKEW,
            state_change=since - SKEW,
            xact_start=None if state == "idle" else since - 1 - SKEW,
        )
        for pid, (state, since) in backends.items()
    )
    return Snapshot(
        taken_at=datetime.fromtimestamp(at, timezone.utc),
        server_version=150000,
        backends=rows,
        owners={
            pid: Owner("process", worker, "gunicorn: worker") for pid, worker in owners.items()
        },
        blocked_by={},
    )


def test_idle_in_transaction_fires_past_the_threshold_naming_the_owners() -> None:
    rules = LiveRules(RuleSettings(idle_in_tx_seconds=3.0))
    # GIVEN backend 11 (worker 7) idle in transaction since T0, backend 12 (worker 8) idle
    backends = {11: ("idle in transaction", T0), 12: ("idle", T0)}
    owners = {11: 7, 12: 8}
    # WHEN snapshots are taken 1 s apart
    fired = [(at, rules.on_snapshot(snapshot(at, backends, owners))) for at in (T0 + 2, T0 + 3.5)]
    # THEN nothing below the threshold, then a trigger naming worker 7 only
    assert fired[0][1] == []
    (trigger,) = fired[1][1]
    assert trigger.rule == "idle-in-transaction"
    assert trigger.pids == (7,)
    # AND the crossing is on our clock: state_change + threshold, the server's skew undone
    assert trigger.crossed_at == pytest.approx(T0 + 3.0)
    assert trigger.at == T0 + 3.5
    assert trigger.evidence["backends"] == [11]


def test_pool_at_cap_fires_after_the_cap_held_for_its_seconds() -> None:
    rules = LiveRules(RuleSettings(pool_capacity=2, pool_at_cap_seconds=3.0, idle_in_tx_seconds=99))
    busy = {1: ("idle in transaction", T0), 2: ("active", T0), 3: ("idle", T0)}
    owners = {1: 7, 2: 7, 3: 7}
    # GIVEN worker 7 has 2 of 2 connections checked out (the idle one is back in the pool)
    assert checked_out(snapshot(T0, busy, owners)) == {7: 2}
    # WHEN it stays there, with one dip below the cap that restarts the clock
    assert rules.on_snapshot(snapshot(T0, busy, owners)) == []
    assert rules.on_snapshot(snapshot(T0 + 2, busy, owners)) == []
    dip = {1: ("idle in transaction", T0), 2: ("idle", T0)}
    assert rules.on_snapshot(snapshot(T0 + 2.5, dip, owners)) == []
    assert rules.on_snapshot(snapshot(T0 + 5, busy, owners)) == []
    # THEN it fires 3 s after the cap was reached again, for worker 7
    (trigger,) = rules.on_snapshot(snapshot(T0 + 8, busy, owners))
    assert (trigger.rule, trigger.pids, trigger.crossed_at) == ("pool-saturation", (7,), T0 + 8)


def test_pool_rule_is_off_without_a_capacity() -> None:
    rules = LiveRules(
        RuleSettings(pool_capacity=None, pool_at_cap_seconds=0, idle_in_tx_seconds=99)
    )
    busy = {1: ("active", T0)}
    assert rules.on_snapshot(snapshot(T0 + 10, busy, {1: 7})) == []


def _sample(pid: int, at: float, frames: list[tuple[str, str]]) -> StackSample:
    return StackSample(
        worker_pid=pid,
        thread_id=1,
        thread_name="MainThread",
        taken_at=datetime.fromtimestamp(at, timezone.utc),
        dump_seconds=0.01,
        active=False,
        owns_gil=False,
        frames=tuple(Frame(name, file, 1, None, file) for name, file in reversed(frames)),
    )


LOOP = [("run", "asyncio/runners.py"), ("_run_once", "asyncio/base_events.py")]
BLOCKED = [
    *LOOP,
    ("invoke_tool", "app/held.py"),
    ("QueuePool._do_get", "sqlalchemy/pool/impl.py"),
    ("Condition.wait", "threading.py"),
]


def test_blocked_event_loop_fires_on_a_loop_asleep_in_a_checkout() -> None:
    rules = LiveRules(RuleSettings(blocked_loop_samples=2))
    # GIVEN worker 7's loop thread asleep in the pool twice, worker 8's loop merely running
    first = rules.on_stacks([_sample(7, T0, BLOCKED), _sample(8, T0, LOOP)])
    second = rules.on_stacks([_sample(7, T0 + 5, BLOCKED), _sample(8, T0 + 5, LOOP)])
    # THEN the second blocked sample fires, for worker 7 only
    assert first == []
    (trigger,) = second
    assert (trigger.rule, trigger.pids, trigger.crossed_at) == ("blocked-event-loop", (7,), T0)


def test_rss_growth_and_memory_limit() -> None:
    mib = 1024 * 1024
    settings = RuleSettings(
        rss_growth_bytes_per_minute=10 * mib, rss_growth_window=60, memory_limit_fraction=0.9
    )
    rules = LiveRules(settings)
    # GIVEN a worker growing 20 MiB per minute under a 1 GiB limit
    fired = [
        rules.on_rss(7, T0 + s, 100 * mib + int(s / 60 * 20 * mib), 1024 * mib) for s in range(61)
    ]
    # THEN growth fires once half the window is seen, not before
    growth = [
        i for i, triggers in enumerate(fired) if any(t.rule == "rss-growth" for t in triggers)
    ]
    assert growth and growth[0] == 30
    assert not any(t.rule == "memory-limit" for triggers in fired for t in triggers)
    # AND at 90% of the limit, memory-limit fires
    (limit,) = [
        t for t in rules.on_rss(7, T0 + 62, 950 * mib, 1024 * mib) if t.rule == "memory-limit"
    ]
    assert limit.pids == (7,) and limit.evidence["limit_bytes"] == 1024 * mib
    # AND a forgotten worker's history does not carry over to its PID's next owner
    rules.forget(7)
    assert rules.on_rss(7, T0 + 63, 950 * mib, None) == []


def test_worker_vanished_bursts_on_the_survivors() -> None:
    event = {"event": "vanished", "pid": 7, "time": T0, "exit": "oom-killed"}
    trigger = LiveRules.on_worker_event(event, [7, 8, 9], T0 + 1.5)
    assert trigger is not None
    assert (trigger.rule, trigger.pids, trigger.evidence["exit"]) == (
        "worker-vanished",
        (8, 9),
        "oom-killed",
    )
    assert (trigger.at, trigger.crossed_at) == (T0 + 1.5, T0)
    appeared = {"event": "appeared", "pid": 9, "time": T0}
    assert LiveRules.on_worker_event(appeared, [8], T0) is None


def test_sizes_and_settings() -> None:
    assert parse_size("1G") == 1024**3
    assert parse_size("1.5MiB") == int(1.5 * 1024**2)
    with pytest.raises(UsageError):
        parse_size("lots")
    with pytest.raises(UsageError, match="--mem-on"):
        WatchSettings(mem_on=frozenset({"cpu"}))


def test_ring_keeps_its_horizon() -> None:
    ring: Ring[int] = Ring(10.0)
    for second in range(30):
        ring.add(T0 + second, second)
    assert ring.items() == list(range(19, 30))
    assert ring.oldest() == T0 + 19


def _incident(root: Path, name: str, size: int, state: str = "complete") -> Path:
    folder = root / f"incident-{name}"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"incident": {"state": state}}))
    (folder / "stacks.jsonl").write_bytes(b"x" * size)
    return folder


def test_retention_deletes_the_oldest_first_and_never_a_kept_one(tmp_path: Path) -> None:
    # GIVEN four incidents of 1 MB, the newest still being written
    folders = [_incident(tmp_path, f"2026010{i}T000000Z-rule", 1_000_000) for i in range(4)]
    # WHEN the budget is 2.5 MB
    deleted = retention.enforce(tmp_path, 2_500_000, keep={folders[-1]})
    # THEN the two oldest go, the rest fits
    assert deleted == folders[:2]
    assert retention.usage(tmp_path).total_bytes <= 2_500_000
    assert retention.incident_state(folders[-1]) == "complete"
    # AND with a reserve for the next one, the kept incident survives whatever the budget
    deleted = retention.enforce(tmp_path, 1, keep={folders[-1]}, reserve=10)
    assert deleted == [folders[2]] and folders[-1].exists()
    assert retention.room_for_one(tmp_path, 1) is not None


def test_metrics_by_worker_and_application_with_no_stale_series() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from profiler.watch.metrics import LiveState, RecorderCollector

    state = LiveState(pool_capacity=6)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(state))
    # GIVEN worker 7 holding two idle transactions (oldest 4 s), worker 8 one active query
    backends = {11: ("idle in transaction", T0 - 4), 12: ("idle in transaction", T0 - 1)}
    state.on_snapshot(snapshot(T0, {**backends, 13: ("active", T0)}, {11: 7, 12: 7, 13: 8}))
    state.on_rss({7: 100, 8: 200})
    state.on_incident("idle-in-transaction")
    text = generate_latest(registry).decode()
    # THEN the families carry the worker and the application
    labels = 'application_name="gateway",worker_pid="7"'
    assert f"profiler_idle_in_transaction_connections{{{labels}}} 2.0" in text
    assert f"profiler_idle_in_transaction_max_age_seconds{{{labels}}} 4.0" in text
    assert 'profiler_connections_held{worker_pid="8"} 1.0' in text
    assert 'profiler_worker_rss_bytes{worker_pid="8"} 200.0' in text
    assert 'profiler_incidents_total{rule="idle-in-transaction"} 1.0' in text
    assert "profiler_pool_capacity 6.0" in text
    # AND a worker gone from the next snapshot leaves no series behind
    state.on_snapshot(snapshot(T0 + 1, {13: ("active", T0)}, {13: 8}))
    state.on_rss({8: 200})
    text = generate_latest(registry).decode()
    assert 'worker_pid="7"' not in text
