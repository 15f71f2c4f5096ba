"""Owners seen through a pooler, from the recording to the findings: a pooler is never a worker.

Snapshots are written by the real ``RecordingWriter`` and read back by the real
readers (JSONL, Parquet); episodes, held series and findings are computed from
that table. Behind PgBouncer in transaction pooling one backend serves worker
after worker, so its owner changes from snapshot to snapshot; where only the
pooler is known, it is named as a pooler.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from profiler.analysis import episodes as ep
from profiler.analysis import held_counts
from profiler.analysis.findings import (
    Evidence,
    Thresholds,
    idle_in_transaction,
    pool_saturation,
)
from profiler.model import Owner, Snapshot
from profiler.pg import recording
from profiler.pg.recording import RecordingWriter
from profiler.session import activity_table
from tests.helpers import client_backend

T0 = 1_750_000_000.0
BOUNCER = Owner("pooler", 900, "/usr/sbin/pgbouncer /etc/pgbouncer/pgbouncer.ini", "pgbouncer")
IDLE = Owner("pooler", 900, "/usr/sbin/pgbouncer x.ini", "pgbouncer: pooled, no client now")
W1 = Owner("process", 2001, "granian worker 1", "through pgbouncer 900", (2001,), "pgbouncer")
W2 = Owner("process", 2002, "granian worker 2", "through pgbouncer 900", (2002,), "pgbouncer")


def _snapshot(at: float, owners: dict[int, Owner], xacts: dict[int, float | None]) -> Snapshot:
    rows = tuple(
        client_backend(
            T0 + at,
            pid,
            state="idle" if xact is None else "idle in transaction",
            backend_start=T0 - 100,
            query_start=T0 + at - 0.2,
            state_change=T0 + (xact if xact is not None else at - 0.1),
            xact_start=None if xact is None else T0 + xact,
        )
        for pid, xact in xacts.items()
    )
    taken = datetime.fromtimestamp(T0 + at, timezone.utc)
    return Snapshot(taken, 160004, rows, owners, {})


def _transaction_pooling(path: Path) -> None:
    """Backend 7 serves W1 (t 0-3), nobody (t 4), then W2 (t 5-8); backend 8 is always the
    pooler's alone (its console was not read)."""
    with RecordingWriter(path, {"interval": 1.0}) as writer:
        for at in range(9):
            owner7 = W1 if at <= 3 else IDLE if at == 4 else W2
            xact7 = None if at == 4 else (0.0 if at <= 3 else 5.0)
            writer.add(_snapshot(at, {7: owner7, 8: BOUNCER}, {7: xact7, 8: 0.0}))


def test_an_owner_that_changes_is_recorded_and_read_back_per_snapshot(tmp_path: Path) -> None:
    # GIVEN a recording where backend 7 changes owner with each transaction
    path = tmp_path / "activity.jsonl"
    _transaction_pooling(path)
    # WHEN it is read as records, as a table from the JSONL, and from Parquet
    records = recording.read(path)
    table = activity_table.read_jsonl(path).frame
    activity_table.convert(path, tmp_path / "activity.parquet")
    parquet = activity_table.read_parquet(tmp_path / "activity.parquet").frame
    # THEN each snapshot has the owner of its moment, with via
    assert [s.owners[7].pid for s in records.snapshots] == [2001] * 4 + [900] + [2002] * 4
    for frame in (table, parquet):
        seven = frame[frame["pid"] == 7]
        assert seven["owner_pid"].tolist() == [2001] * 4 + [900] + [2002] * 4
        assert seven["owner_kind"].astype(str).tolist()[3:6] == ["process", "pooler", "process"]
        assert seven["owner_via"].astype(object).tolist()[:4] == ["pgbouncer"] * 4
        assert pd.isna(seven["owner_via"].iloc[4])
    # and an owner that did not change is written once
    assert path.read_text().count('"granian worker 1"') == 1


def test_the_pooler_is_never_a_worker_in_episodes_held_counts_or_findings(
    tmp_path: Path,
) -> None:
    # GIVEN transactions held through PgBouncer: two seen through, one only the pooler's
    path = tmp_path / "activity.jsonl"
    _transaction_pooling(path)
    table = activity_table.read_jsonl(path)
    snapshots = table.snapshots
    # WHEN episodes, per-owner held counts and the findings are computed
    episodes = ep.held_episodes(table.frame, session_end=T0 + 9, snapshots=snapshots)
    held = held_counts.connections_held(table.frame, snapshots=snapshots)
    evidence = dataclasses.replace(
        Evidence.empty(session_start=T0, session_end=T0 + 9),
        episodes=episodes,
        held=held,
        pool_capacity=1,
    )
    idle = idle_in_transaction(evidence, Thresholds(idle_in_transaction_seconds=1.0))
    saturated = pool_saturation(evidence, Thresholds())
    # THEN workers are the processes behind the pooler; the pooler is labelled, not a worker
    by_backend = episodes.groupby("pid")
    assert sorted(by_backend.get_group(7)["owner_pid"].tolist()) == [2001, 2002]
    assert set(by_backend.get_group(7)["owner_via"]) == {"pgbouncer"}
    eight = by_backend.get_group(8)
    assert eight["owner_pid"].isna().all()
    assert eight["owner_label"].tolist() == ["pgbouncer 900 (pooler)"]
    assert 900 not in set(held["owner_pid"].dropna().astype(int))
    assert all("900" not in finding.title for finding in saturated)
    assert idle, "the held transactions are a finding"
    assert "worker unknown behind pgbouncer 900 (pooler)" in idle[0].title
    assert "worker 900" not in idle[0].title and "workers 900" not in idle[0].title


def test_a_transaction_seen_open_after_its_server_was_unlinked_keeps_its_worker(
    tmp_path: Path,
) -> None:
    """The race of transaction pooling: pg_stat_activity still shows the transaction, the
    SHOW SERVERS read a moment later shows its server unlinked (owner: the pooler)."""
    # GIVEN backend 7 in one transaction for W1 at t 0-3, its last snapshot racing
    path = tmp_path / "activity.jsonl"
    with RecordingWriter(path, {"interval": 1.0}) as writer:
        for at in range(4):
            writer.add(_snapshot(at, {7: W1 if at < 3 else IDLE}, {7: 0.0}))
        writer.add(_snapshot(4, {7: IDLE}, {7: None}))
    table = activity_table.read_jsonl(path)
    # WHEN its episode is built
    episodes = ep.held_episodes(table.frame, session_end=T0 + 5, snapshots=table.snapshots)
    # THEN the worker the earlier snapshots named holds it, not the pooler
    (owner,) = episodes["owner_pid"].tolist()
    assert owner == 2001
    assert episodes["owner_via"].tolist() == ["pgbouncer"]
