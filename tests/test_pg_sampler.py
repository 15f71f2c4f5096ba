"""The sampler against a real server: states, ages, owners, and its own manners."""

from __future__ import annotations

import os
import threading

import psycopg
import pytest

from profiler.model import ActivitySample, Snapshot
from profiler.pg.sampler import ActivitySampler

pytestmark = pytest.mark.postgres


def _mine(snapshot: Snapshot, pids: list[int]) -> dict[int, ActivitySample]:
    return {b.pid: b for b in snapshot.backends if b.pid in pids}


def test_states_ages_and_owners_of_backends_held_by_this_process(open_sessions, postgres_dsn):
    # GIVEN backends in every state a pool connection can be in, held by our threads
    idle_tx = open_sessions(2, "idle in transaction")
    active = open_sessions(1, "active")
    idle = psycopg.connect(postgres_dsn, autocommit=True, application_name="profiler-tests-idle")
    idle_pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0]
    aborted = psycopg.connect(postgres_dsn, application_name="profiler-tests-aborted")
    aborted_pid = aborted.execute("SELECT pg_backend_pid()").fetchone()[0]
    with pytest.raises(psycopg.errors.DivisionByZero):
        aborted.execute("SELECT 1/0")
    try:
        # WHEN
        with ActivitySampler(postgres_dsn) as sampler:
            snapshot = sampler.snapshot()
            own_pid = sampler.backend_pid
        # THEN states are right
        pids = [h.backend_pid for h in idle_tx + active] + [idle_pid, aborted_pid]
        seen = _mine(snapshot, pids)
        assert {pid: seen[pid].state for pid in pids} == {
            **{h.backend_pid: "idle in transaction" for h in idle_tx},
            active[0].backend_pid: "active",
            idle_pid: "idle",
            aborted_pid: "idle in transaction (aborted)",
        }
        # ... ages are measured on the server's clock and are non-negative
        for backend in seen.values():
            assert backend.state_age_seconds is not None and backend.state_age_seconds >= 0
        assert all(seen[h.backend_pid].xact_age_seconds >= 0 for h in idle_tx)
        # ... the owner of each is this test process
        for pid in pids:
            owner = snapshot.owners[pid]
            assert (owner.kind, owner.pid) == ("process", os.getpid()), owner
        # ... and the sampler's own backend never appears
        assert own_pid not in {b.pid for b in snapshot.backends}
    finally:
        idle.close()
        aborted.close()


def test_the_sampler_never_sits_idle_in_transaction(postgres_dsn):
    # GIVEN a sampler running in a thread
    with ActivitySampler(postgres_dsn, interval=0.1) as sampler:
        own_pid = sampler.backend_pid
        stop = threading.Event()
        states: list[tuple[str | None, object]] = []

        def watch() -> None:
            with psycopg.connect(postgres_dsn, autocommit=True) as other:
                while not stop.is_set():
                    states.append(
                        other.execute(
                            "SELECT state, xact_start FROM pg_stat_activity WHERE pid = %s",
                            (own_pid,),
                        ).fetchone()
                    )

        watcher = threading.Thread(target=watch)
        watcher.start()
        # WHEN it samples for a while
        snapshots = list(sampler.run(seconds=1.0))
        stop.set()
        watcher.join()
    # THEN it took ~10 snapshots and was never idle in transaction, and it is
    # recognisable as ours
    assert 8 <= len(snapshots) <= 11
    assert states and all(state != "idle in transaction" for state, _ in states)
    assert all(xact is None for state, xact in states if state == "idle")


def test_a_role_without_pg_monitor_gets_one_warning(postgres_dsn, open_sessions):
    # GIVEN a role that cannot read other roles' query texts, and others' sessions
    open_sessions(2)
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS profiler_no_monitor")
        admin.execute("CREATE ROLE profiler_no_monitor LOGIN")
    try:
        dsn = psycopg.conninfo.make_conninfo(postgres_dsn, user="profiler_no_monitor")
        warnings: list[str] = []
        # WHEN it samples three times
        with ActivitySampler(dsn, warn=warnings.append) as sampler:
            snapshots = [sampler.snapshot() for _ in range(3)]
        # THEN one warning naming the fix; other roles' rows are there, details hidden
        assert len(warnings) == 1
        assert "GRANT pg_monitor TO profiler_no_monitor" in warnings[0]
        hidden = [b for b in snapshots[-1].backends if b.query_hidden]
        assert hidden and all(b.state is None and b.pid > 0 for b in hidden)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute("DROP ROLE profiler_no_monitor")


def test_interval_below_ten_hertz_is_refused(postgres_dsn):
    from profiler.errors import UsageError

    with pytest.raises(UsageError, match=r"at least 0\.1"):
        ActivitySampler(postgres_dsn, interval=0.05)


def test_query_texts_cut_at_track_activity_query_size_are_flagged(postgres_dsn):
    # GIVEN a session whose last query is longer than track_activity_query_size
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        limit = conn.execute(
            "SELECT pg_size_bytes(current_setting('track_activity_query_size'))"
        ).fetchone()[0]
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SELECT 1 /* " + "x" * (limit + 100) + " */")
        short = psycopg.connect(postgres_dsn, autocommit=True)
        short_pid = short.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            # WHEN
            with ActivitySampler(postgres_dsn, owners=False) as sampler:
                seen = _mine(sampler.snapshot(), [pid, short_pid])
        finally:
            short.close()
    # THEN only the long one is flagged
    assert seen[pid].query_truncated is True
    assert len(seen[pid].query.encode()) < limit
    assert seen[short_pid].query_truncated is False
