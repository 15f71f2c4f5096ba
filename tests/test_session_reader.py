"""Reading a session folder back: built by hand with the real writers, read with our reader.

No PostgreSQL or ptrace: snapshots, stack samples and RSS points are made up,
then written by ``RecordingWriter``, ``StackLogWriter`` and ``JsonlWriter``
exactly as ``session run`` writes them.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import profiler.session
from profiler import jsonl
from profiler.analysis import episodes, held_counts, hold_stacks
from profiler.capture import pool_log, stack_log, task_payload
from profiler.capture.stack_log import StackLogWriter
from profiler.capture.stacks import DumpFailure, Frame, StackSample
from profiler.errors import ExitCode, InputError
from profiler.memory import rss as rss_log
from profiler.model import ActivitySample, Gap, Owner, Snapshot
from profiler.pg import recording
from profiler.pg.dsn import to_sqlalchemy
from profiler.pg.recording import RecordingWriter
from profiler.session import activity_schema, activity_table, reader
from tests.helpers import client_backend, lines_of_kind, retry

T0 = 1_750_000_000.0
LAG = 0.25  # the server's clock runs this far behind ours
W1 = Owner("process", 2001, "gunicorn: worker [app]", pids=(2001,))
W2 = Owner("process", 2002, "gunicorn: worker [app] 2")


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def backend(
    at: float,
    pid: int,
    *,
    start: float = T0 - 100,
    xact: float | None = None,
    state: str = "idle",
    query: str = "SELECT 1",
    query_id: int | None = None,
) -> ActivitySample:
    server = at - LAG
    return client_backend(
        server,
        pid,
        state=state,
        backend_start=start,
        query_start=server - 0.2,
        state_change=server - 0.1,
        xact_start=xact,
        query=query,
        query_id=query_id,
    )


def snapshot(at: float, backends: list[ActivitySample], owners: dict[int, Owner]) -> Snapshot:
    return Snapshot(utc(at), 160004, tuple(backends), owners, {})


def write_activity(path: Path) -> list[Snapshot | Gap]:
    """Four snapshots and a gap; pid 7 holds a transaction, pid 8 is reused by a new backend,
    pid 9's owner is only found at its second snapshot."""
    items: list[Snapshot | Gap] = [
        snapshot(
            T0 + 1,
            [
                backend(T0 + 1, 7, xact=T0 + 0.5 - LAG, state="idle in transaction"),
                backend(T0 + 1, 8, query_id=-8_765_432_109_876_543_210),
                backend(T0 + 1, 9),
            ],
            {7: W1, 8: W1},
        ),
        Gap(utc(T0 + 1.5), utc(T0 + 1.9), "connection lost"),
        snapshot(
            T0 + 2,
            [
                backend(T0 + 2, 7, xact=T0 + 0.5 - LAG, state="idle in transaction"),
                backend(T0 + 2, 8, start=T0 + 1.7, state="active", xact=T0 + 1.95 - LAG),
                backend(T0 + 2, 9),
            ],
            {7: W1, 8: W2, 9: W2},
        ),
        snapshot(T0 + 3, [], {}),  # every client gone for a moment
        snapshot(
            T0 + 4,
            [backend(T0 + 4, 7, query="UPDATE t SET x = 'é'")],
            {7: W1},
        ),
    ]
    with RecordingWriter(path, {"interval": 1.0, "server_version": 160004}) as out:
        for item in items:
            out.add(item)
    return items


FRAMES = (
    Frame("select", "/usr/lib/python3.12/selectors.py", 468, None, "selectors.py"),
    Frame("run_forever", "/usr/lib/python3.12/asyncio/base_events.py", 641, None, None),
    Frame("main", "/srv/app/main.py", 10, None, "main.py"),
)


def write_stacks(path: Path) -> None:
    with StackLogWriter(path, {"interval": 0.5, "pids": [2001, 2002]}) as log:
        for k in range(6):
            log.add(
                StackSample(
                    worker_pid=2001 + k % 2,
                    thread_id=140_000 + k % 3,
                    thread_name=None if k == 4 else "MainThread",
                    taken_at=utc(T0 + 0.5 * k),
                    dump_seconds=0.02,
                    active=k % 2 == 0,
                    owns_gil=False,
                    frames=FRAMES[k % 2 :],
                    os_thread_id=None if k == 5 else 900 + k,
                )
            )
        log.add(DumpFailure(2002, utc(T0 + 3.1), "process exited", dropped=True))


def write_rss(path: Path) -> None:
    with jsonl.JsonlWriter(path, rss_log.FORMAT, rss_log.VERSION, {"interval": 1.0}) as out:
        for k in range(4):
            for pid in (2001, 2002):
                when = utc(T0 + k + 0.1).isoformat()
                out.write({"kind": "rss", "pid": pid, "taken_at": when, "rss": 1000 * pid + k})
        out.write({"kind": "exit", "pid": 2002, "taken_at": utc(T0 + 4.1).isoformat()})


def write_manifest(directory: Path, *, ended: bool = True, **changes: Any) -> None:
    manifest = {
        "format": "profiler-session",
        "version": 1,
        "name": "checkout-slow",
        "started_at": utc(T0).isoformat(),
        "ended_at": utc(T0 + 5).isoformat() if ended else None,
        "interrupted": False if ended else None,
        "host": {"hostname": "test"},
        "tools": {"profiler": "0"},
        "settings": {"duration": 5, "pg_interval": 1.0, "dump_interval": 0.5},
        "dsn": "postgresql://app@127.0.0.1/app",
        "targets": [{"pid": 2001, "role": "worker", "cmdline": "gunicorn"}],
        "probes": {
            "pg": {"status": "ok", "error": None, "files": ["activity.jsonl"]},
            "stacks": {"status": "ok", "error": None, "files": ["stacks.jsonl"]},
            "rss": {"status": "ok", "error": None, "files": ["rss.jsonl"]},
        },
        **changes,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "session"
    directory.mkdir()
    write_activity(directory / "activity.jsonl")
    write_stacks(directory / "stacks.jsonl")
    write_rss(directory / "rss.jsonl")
    write_manifest(directory)
    return directory


# -- the activity table ----------------------------------------------------------------------


def test_the_activity_table_matches_the_recording_reader(session_dir: Path) -> None:
    # GIVEN the reference reader's snapshots
    rec = recording.read(session_dir / "activity.jsonl")
    # WHEN
    table = activity_table.read_jsonl(session_dir / "activity.jsonl")
    frame = table.frame
    # THEN one row per backend per snapshot, every column, every value the same
    assert list(frame.columns) == list(activity_schema.COLUMNS)
    expected = [(s, b) for s in rec.snapshots for b in s.backends]
    assert len(frame) == len(expected) == 7
    for (snap, sample), got in zip(expected, frame.itertuples(index=False), strict=True):
        assert got.taken_at == snap.taken_at.timestamp()
        assert got.clock_offset == pytest.approx(LAG)
        for name in ActivitySample._fields:
            value = getattr(got, name)
            want = getattr(sample, name)
            if want is None:
                assert pd.isna(value), name
            else:
                assert value == want, name
        owner = snap.owners.get(sample.pid)
        if owner is None:
            assert pd.isna(got.owner_pid) and pd.isna(got.owner_kind)
        else:
            assert (got.owner_pid, got.owner_kind, got.owner_cmdline) == (
                owner.pid,
                owner.kind,
                owner.cmdline,
            )
    assert table.gaps == rec.gaps
    assert table.snapshots == [s.taken_at.timestamp() for s in rec.snapshots]
    assert not table.torn_tail


def test_owners_follow_backend_identity(session_dir: Path) -> None:
    frame = activity_table.frame_from_jsonl(session_dir / "activity.jsonl")
    by = {(r.taken_at - T0, r.pid): r.owner_pid for r in frame.itertuples()}
    # pid 7's owner was written once, at its first snapshot, and is carried to the last
    assert by[(1, 7)] == by[(2, 7)] == by[(4, 7)] == 2001
    # pid 8 was reused by a new backend owned by another worker
    assert (by[(1, 8)], by[(2, 8)]) == (2001, 2002)
    # pid 9's owner was only found at its second snapshot: unknown before
    assert by[(1, 9)] is pd.NA
    assert by[(2, 9)] == 2002


def test_the_table_is_compact(session_dir: Path) -> None:
    frame = activity_table.frame_from_jsonl(session_dir / "activity.jsonl")
    for name in ("state", "query", "application_name", "wait_event", "owner_cmdline"):
        assert isinstance(frame[name].dtype, pd.CategoricalDtype), name
    assert frame["pid"].dtype == "int64"
    assert str(frame["query_id"].dtype) == "Int64"  # 64-bit ids survive: no float detour
    assert frame["query_id"].iloc[1] == -8_765_432_109_876_543_210
    assert frame["taken_at"].dtype == "float64"


def test_parquet_round_trips(session_dir: Path) -> None:
    # GIVEN
    source, target = session_dir / "activity.jsonl", session_dir / "activity.parquet"
    from_jsonl = activity_table.read_jsonl(source)
    # WHEN
    rows = activity_table.convert(source, target)
    from_parquet = activity_table.read_parquet(target)
    # THEN
    assert rows == len(from_jsonl.frame) == 7
    pd.testing.assert_frame_equal(from_parquet.frame, from_jsonl.frame)
    assert from_parquet.gaps == from_jsonl.gaps
    assert from_parquet.snapshots == from_jsonl.snapshots
    assert from_parquet.header == from_jsonl.header
    assert not list(session_dir.glob("*.partial"))


def test_load_prefers_a_current_parquet_file(session_dir: Path) -> None:
    source = session_dir / "activity.jsonl"
    activity_table.convert(source, session_dir / "activity.parquet")
    # the Parquet file is complete on its own: the JSONL may even be deleted
    kept = source.read_bytes()
    source.unlink()
    assert len(activity_table.load(session_dir)) == 7
    assert activity_table.gaps(session_dir)[0].reason == "connection lost"
    # a JSONL that grew after the conversion wins: the table would miss its new lines
    source.write_bytes(kept)
    with source.open("a") as out:
        line = json.loads(kept.decode().splitlines()[-1])
        line["taken_at"] = utc(T0 + 5).isoformat()
        out.write(json.dumps(line) + "\n")
    assert len(activity_table.load(session_dir)) == 8


def test_a_corrupt_parquet_file_falls_back_to_the_jsonl(session_dir: Path) -> None:
    (session_dir / "activity.parquet").write_bytes(b"PAR1 not really")
    assert len(activity_table.load(session_dir)) == 7


def test_a_corrupt_activity_line_is_an_input_error(session_dir: Path) -> None:
    path = session_dir / "activity.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"
    path.write_text("".join(lines))
    with pytest.raises(InputError, match="line 3 is corrupt") as caught:
        activity_table.frame_from_jsonl(path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_a_file_of_another_kind_is_refused(session_dir: Path) -> None:
    with pytest.raises(InputError, match="is not a profiler-activity file"):
        activity_table.frame_from_jsonl(session_dir / "stacks.jsonl")


# -- the session -----------------------------------------------------------------------------


def test_open_gives_every_frame(session_dir: Path) -> None:
    # WHEN
    session = profiler.session.open(session_dir)
    # THEN
    assert session.manifest["name"] == "checkout-slow"
    assert session.started_at == utc(T0)
    assert session.ended_at == utc(T0 + 5)
    assert not session.interrupted
    assert len(session.activity) == 7
    assert session.activity is session.activity  # loaded once
    assert [g.reason for g in session.gaps] == ["connection lost"]
    assert session.snapshots == [T0 + 1, T0 + 2, T0 + 3, T0 + 4]
    assert list(session.stack_samples.columns) == list(reader.STACK_COLUMNS)
    assert len(session.stack_samples) == 6
    assert list(session.rss.columns) == list(reader.RSS_COLUMNS)
    assert len(session.rss) == 8


def test_stack_samples_match_the_stack_log_reader(session_dir: Path) -> None:
    path = session_dir / "stacks.jsonl"
    expected = stack_log.to_dataframe(stack_log.read(path).samples)
    got = reader.read_stack_samples(path)
    categorical = ["thread_name", "leaf", "stack"]
    for name in categorical:
        assert isinstance(got[name].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(
        got.astype({name: object for name in categorical}).astype({"os_thread_id": "float64"}),
        expected.astype({name: object for name in categorical}).astype({"os_thread_id": "float64"}),
    )
    assert got["stack"].iloc[0] == ";".join(f.label for f in reversed(FRAMES))


def test_the_frames_correlate(session_dir: Path) -> None:
    session = reader.open(session_dir)
    held = episodes.held_episodes(
        session.activity, session_end=session.end, snapshots=session.snapshots
    )
    # pid 7's transaction started at T0 + 0.5 on our clock; pid 8's new backend's at T0 + 1.95
    assert list(held["start"] - T0) == pytest.approx([0.5, 1.95])
    # both were last seen at T0 + 2 and gone at the snapshot with no backend at all
    assert list(held["end"] - T0) == pytest.approx([3.0, 3.0])
    # which only the snapshot list knows of: the rows alone skip to the next one
    rows_only = episodes.held_episodes(session.activity, session_end=session.end)
    assert list(rows_only["end"] - T0) == pytest.approx([4.0, 4.0])
    # pid 7's transaction was seen open from 0.5 to 2 (its dump at 1 is inside); pid 8's
    # only at 2, 0.05 s after it began: no dump fell in what was seen of it
    during = hold_stacks.stacks_during(held, session.stack_samples)
    assert set(during["episode_id"]) == {0}
    aligned = held_counts.memory_alignment(
        held_counts.connections_held(session.activity), session.rss
    )
    assert len(aligned) == 8


def test_missing_probes_give_empty_frames(tmp_path: Path) -> None:
    write_manifest(tmp_path, probes={})
    session = reader.open(tmp_path)
    assert session.activity.empty
    assert list(session.activity.columns) == list(activity_schema.COLUMNS)
    assert session.stack_samples.empty
    assert list(session.stack_samples.columns) == list(reader.STACK_COLUMNS)
    assert session.rss.empty
    assert list(session.rss.columns) == list(reader.RSS_COLUMNS)
    assert session.gaps == []
    assert episodes.held_episodes(session.activity, session_end=session.end).empty


def test_a_killed_session_still_opens(session_dir: Path) -> None:
    # GIVEN no ended_at, no Parquet file, and torn last lines (killed mid-write)
    write_manifest(session_dir, ended=False)
    for name in ("activity.jsonl", "stacks.jsonl"):
        path = session_dir / name
        text = path.read_text()
        path.write_text(text + text.splitlines()[-1][:40])
    # WHEN
    session = reader.open(session_dir)
    # THEN every complete line is read
    assert session.interrupted
    assert len(session.activity) == 7
    assert len(session.stack_samples) == 6
    assert activity_table.read_jsonl(session_dir / "activity.jsonl").torn_tail
    # and the end is the last thing any probe recorded: the snapshot at T0 + 4
    assert session.ended_at == utc(T0 + 4)
    held = episodes.held_episodes(session.activity, session_end=session.end)
    assert held["open"].tolist() == [False, False]


def test_a_killed_session_ends_at_its_last_record(tmp_path: Path) -> None:
    write_manifest(tmp_path, ended=False)
    write_rss(tmp_path / "rss.jsonl")
    assert reader.open(tmp_path).ended_at == utc(T0 + 3.1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is not a profiler session: no manifest.json"),
        ('{"format": "profiler-session", "version": 1, "name": ', "manifest.json is corrupt"),
        ('{"format": "something-else"}', "is not a profiler-session manifest"),
        ('{"format": "profiler-session", "version": 99}', "has format version 99"),
        ('{"format": "profiler-session", "version": 1, "started_at": 5}', "not an ISO time"),
    ],
)
def test_a_bad_manifest_is_an_input_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(InputError, match=message) as caught:
        reader.open(tmp_path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert "\n" not in caught.value.message


def test_session_times_are_aware_utc(session_dir: Path) -> None:
    session = reader.open(session_dir)
    assert session.started_at.tzinfo is not None
    assert session.ended_at - session.started_at == timedelta(seconds=5)
    assert not math.isnan(session.end)


# -- pool figures ----------------------------------------------------------------------------


def test_a_session_without_task_files_has_no_pool_samples(tmp_path: Path) -> None:
    write_manifest(tmp_path, probes={})
    pools = reader.open(tmp_path).pool_samples
    assert pools.empty
    assert list(pools.columns) == list(pool_log.POOL_COLUMNS)


@pytest.mark.postgres
def test_pool_samples_are_read_from_the_task_sampler_files(
    tmp_path: Path, postgres_dsn: str
) -> None:
    # GIVEN a real pool of 3 in this process with one connection checked out
    from sqlalchemy import create_engine, text

    engine = create_engine(to_sqlalchemy(postgres_dsn), pool_size=3, max_overflow=0)
    write_manifest(tmp_path, probes={})
    path = tmp_path / reader.TASKS_DIR / f"tasks-{os.getpid()}.jsonl"
    path.parent.mkdir()
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
            # WHEN the task sampler runs here for three rounds, writing the session's file (waited
            # for, not timed: its first round scans this long-lived process's heap for pools)
            sampler = task_payload.start(str(path), 0.05, 60)
            retry(lambda: lines_of_kind(path, "round") >= 3, timeout=60, what="3 rounds")
            task_payload.request_stop(str(path))
            sampler.join(10)
    finally:
        engine.dispose()
    # THEN the session reads this pool's figures, one row per round
    pools = reader.open(tmp_path).pool_samples
    mine = pools[(pools["size"] == 3) & (pools["max_overflow"] == 0)]
    assert len(mine) >= 3
    assert set(mine["pool_class"]) == {"QueuePool"}
    assert set(mine["checked_out"]) == {1}
    assert set(mine["worker_pid"]) == {os.getpid()}
    assert mine["taken_at"].is_monotonic_increasing
