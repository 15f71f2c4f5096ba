"""Correlation on hand-built frames: no PostgreSQL, no ptrace, just the arithmetic.

Activity frames here have the activity table's columns that correlation
reads (``profiler.session.activity_schema``); times are small numbers so each
expected value can be worked out by hand in the comment above it.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiler.analysis import episodes as ep
from profiler.analysis import held_counts, hold_stacks
from profiler.analysis.attribution import attribute_tasks, observed_windows
from profiler.analysis.code_paths import FALLBACK_ROOT, describe
from profiler.analysis.sample_pairs import window_pairs
from profiler.errors import UsageError

IDLE_TX = "idle in transaction"


def row(
    taken_at: float,
    pid: int,
    *,
    state: str = "idle",
    xact_start: float | None = None,
    state_change: float | None = None,
    backend_start: float = 1.0,
    query: str | None = "SELECT 1",
    owner: int | None = 2001,
    offset: float = 0.0,
    backend_type: str = "client backend",
    app: str = "gateway",
) -> dict[str, Any]:
    """One activity row; ``offset`` is how far the server's clock runs behind ours."""
    return {
        "taken_at": taken_at,
        "clock_offset": offset,
        "sampled_at": taken_at - offset,
        "pid": pid,
        "backend_start": backend_start,
        "xact_start": xact_start,
        "state_change": state_change,
        "state": state,
        "query": query,
        "application_name": app,
        "backend_type": backend_type,
        "owner_pid": owner,
        "owner_cmdline": None if owner is None else f"gunicorn: worker {owner}",
    }


def activity(*rows: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    frame["owner_pid"] = frame["owner_pid"].astype("Int64")
    frame["xact_start"] = frame["xact_start"].astype("float64")
    frame["state_change"] = frame["state_change"].astype("float64")
    return frame


def samples(*rows: tuple[float, int, str], active: bool = True) -> pd.DataFrame:
    """Stack samples ``(taken_at, worker_pid, stack)``, taken_at as UTC datetimes (as read)."""
    return pd.DataFrame(
        {
            "taken_at": pd.to_datetime([t for t, _, _ in rows], unit="s", utc=True),
            "worker_pid": [w for _, w, _ in rows],
            "thread_id": [1] * len(rows),
            "active": [active] * len(rows),
            "stack": [s for _, _, s in rows],
        }
    )


def one(frame: pd.DataFrame) -> pd.Series[Any]:
    assert len(frame) == 1, frame
    return frame.iloc[0]


# -- held_episodes ---------------------------------------------------------------------------


def test_an_episode_starts_at_xact_start_and_ends_at_the_next_snapshot() -> None:
    # GIVEN snapshots at 10..13; backend 7 opens a transaction at 10.5 (server), runs UPDATE a,
    # goes idle in it at 10.6, runs UPDATE b at 11.8 and idles again from 11.9; gone at 13
    frame = activity(
        row(10, 7),
        row(11, 7, state=IDLE_TX, xact_start=10.5, state_change=10.6, query="UPDATE a"),
        row(12, 7, state=IDLE_TX, xact_start=10.5, state_change=11.9, query="UPDATE b"),
        row(13, 7),
    )
    # WHEN
    held = one(ep.held_episodes(frame, session_end=20.0))
    # THEN the start is the server's, not our first sighting, and the end the snapshot after
    assert held["start"] == 10.5
    assert (held["first_seen"], held["last_seen"], held["end"]) == (11, 12, 13)
    assert not held["open"]
    # AND it held 1.5 s as far as was seen (to its last sighting), 2.5 s at most
    assert held["duration"] == pytest.approx(1.5)
    assert held["duration_max"] == pytest.approx(2.5)
    # two idle periods: 0.4 s seen at 11 (since 10.6), then 0.1 s seen at 12 (since 11.9)
    assert held["idle_seconds"] == pytest.approx(0.5)
    assert held["max_idle_age"] == pytest.approx(0.4)
    assert held["queries"] == ("UPDATE b", "UPDATE a")
    assert held["last_query"] == "UPDATE b"
    assert held["samples"] == 2
    assert held["owner_pid"] == 2001
    assert held["owner_cmdline"] == "gunicorn: worker 2001"
    assert held["application_name"] == "gateway"
    assert list(ep.held_episodes(frame, session_end=20.0).columns) == list(ep.EPISODE_COLUMNS)


def test_one_idle_period_seen_twice_counts_once() -> None:
    # GIVEN idle since 10.6, seen at 11 (0.4 s) and at 12 (1.4 s): one period of at least 1.4 s
    frame = activity(
        row(11, 7, state=IDLE_TX, xact_start=10.5, state_change=10.6),
        row(12, 7, state=IDLE_TX, xact_start=10.5, state_change=10.6),
        row(13, 7),
    )
    held = one(ep.held_episodes(frame, session_end=20.0))
    assert held["idle_seconds"] == pytest.approx(1.4)
    assert held["max_idle_age"] == pytest.approx(1.4)


def test_an_episode_still_open_at_the_last_snapshot() -> None:
    frame = activity(
        row(10, 7, state="active", xact_start=9.5),
        row(11, 7, state=IDLE_TX, xact_start=9.5, state_change=10.5),
    )
    held = one(ep.held_episodes(frame, session_end=15.0))
    assert held["open"]
    assert math.isnan(held["end"])
    assert held["duration"] == pytest.approx(11.0 - 9.5)  # seen open until 11
    assert held["duration_max"] == pytest.approx(15.0 - 9.5)
    assert held["max_idle_age"] == pytest.approx(0.5)


def test_an_empty_snapshot_still_ends_an_episode() -> None:
    # GIVEN the backend's last row at 11, and a snapshot at 12 with no backend at all
    frame = activity(row(10, 7, state="active", xact_start=9.5), row(11, 7, xact_start=9.5))
    # WHEN the reader passes every snapshot's time
    held = one(ep.held_episodes(frame, session_end=15.0, snapshots=[10.0, 11.0, 12.0]))
    # THEN the empty snapshot is the end, not "still open"
    assert held["end"] == 12.0
    assert not held["open"]


def test_an_unknown_owner_is_kept() -> None:
    frame = activity(row(10, 7, state=IDLE_TX, xact_start=9.0, owner=None), row(11, 7, owner=None))
    held = one(ep.held_episodes(frame, session_end=12.0))
    assert held["owner_pid"] is pd.NA
    assert held["start"] == 9.0


def test_the_owner_named_later_in_the_episode_is_used() -> None:
    frame = activity(
        row(10, 7, state=IDLE_TX, xact_start=9.0, owner=None),
        row(11, 7, state=IDLE_TX, xact_start=9.0, owner=2002),
    )
    assert one(ep.held_episodes(frame, session_end=12.0))["owner_pid"] == 2002


def test_snapshots_out_of_order_give_the_same_episodes() -> None:
    rows = [
        row(10, 7, state="active", xact_start=9.5, query="q1"),
        row(11, 7, state=IDLE_TX, xact_start=9.5, state_change=10.2, query="q2"),
        row(12, 7),
        row(10, 8),
        row(11, 8, state="active", xact_start=10.9, owner=2002),
        row(12, 8, state=IDLE_TX, xact_start=10.9, state_change=11.5, owner=2002, query="q3"),
        row(13, 8, state=IDLE_TX, xact_start=10.9, state_change=11.5, owner=2002, query="q3"),
        row(13, 7),
    ]
    ordered = ep.held_episodes(activity(*rows), session_end=20.0)
    shuffled = [rows[i] for i in (7, 2, 5, 0, 3, 6, 1, 4)]
    pd.testing.assert_frame_equal(ep.held_episodes(activity(*shuffled), session_end=20.0), ordered)
    assert list(ordered["pid"]) == [7, 8]
    assert list(ordered["end"].fillna(-1)) == [12.0, -1]
    assert ordered.loc[0, "queries"] == ("q2", "q1")


def test_a_reused_pid_is_another_backend() -> None:
    # GIVEN pid 7 holds a transaction for worker 2001, disconnects, and PostgreSQL gives
    # pid 7 to a new backend (another backend_start) for worker 2002, with the same
    # xact_start by coincidence
    frame = activity(
        row(10, 7, state=IDLE_TX, xact_start=9.0, backend_start=1.0, owner=2001),
        row(11, 7, state=IDLE_TX, xact_start=9.0, backend_start=10.5, owner=2002),
        row(12, 7, backend_start=10.5, owner=2002),
    )
    held = ep.held_episodes(frame, session_end=20.0)
    assert list(held["owner_pid"]) == [2001, 2002]
    assert list(held["backend_start"]) == [1.0, 10.5]
    # the first ended when its backend was gone (the next snapshot), not at 12
    assert list(held["end"]) == [11.0, 12.0]


def test_back_to_back_transactions_are_two_episodes() -> None:
    frame = activity(
        row(10, 7, state="active", xact_start=9.8),
        row(11, 7, state="active", xact_start=10.7),
        row(12, 7),
    )
    held = ep.held_episodes(frame, session_end=20.0)
    assert list(held["start"]) == [9.8, 10.7]
    assert list(held["end"]) == [11.0, 12.0]


def test_the_clock_offset_puts_server_times_on_our_clock() -> None:
    # GIVEN the server's clock runs 5 s behind ours: our 100 is its 95
    frame = activity(
        row(100, 7, state=IDLE_TX, xact_start=90.0, state_change=93.0, offset=5.0),
        row(101, 7, offset=5.0),
    )
    held = one(ep.held_episodes(frame, session_end=200.0))
    assert held["start"] == 95.0  # 90 on the server's clock
    assert held["first_seen"] == 100.0
    assert held["max_idle_age"] == pytest.approx(2.0)  # 95 - 93, both on the server's clock
    assert held["duration"] == pytest.approx(100.0 - 95.0)
    assert held["duration_max"] == pytest.approx(101.0 - 95.0)


def test_non_client_backends_are_left_out() -> None:
    frame = activity(
        row(10, 7, state="active", xact_start=9.0, backend_type="autovacuum worker"),
        row(10, 8, state="active", xact_start=9.0),
    )
    assert list(ep.held_episodes(frame, session_end=12.0)["pid"]) == [8]


def test_gaps_do_not_split_an_episode() -> None:
    # GIVEN no snapshot between 11 and 30 (the server was unreachable)
    frame = activity(
        row(10, 7, state=IDLE_TX, xact_start=9.0, state_change=9.5),
        row(30, 7, state=IDLE_TX, xact_start=9.0, state_change=9.5),
        row(31, 7),
    )
    held = one(ep.held_episodes(frame, session_end=40.0))
    assert (held["first_seen"], held["last_seen"], held["end"]) == (10, 30, 31)
    assert held["idle_seconds"] == pytest.approx(20.5)


def test_queries_are_capped_most_recent_first() -> None:
    texts = [f"q{i}" for i in range(8)]
    frame = activity(
        *(row(10 + i, 7, state="active", xact_start=9.0, query=q) for i, q in enumerate(texts)),
        row(18, 7, state="active", xact_start=9.0, query="q0"),
    )
    held = one(ep.held_episodes(frame, session_end=30.0))
    assert held["queries"] == ("q0", "q7", "q6", "q5", "q4")[: ep.QUERIES_KEPT]


def test_categorical_columns_give_the_same_episodes() -> None:
    frame = activity(
        row(10, 7, state=IDLE_TX, xact_start=9.0, state_change=9.5, query="q1"),
        row(11, 7, state="active", xact_start=9.0, query="q2"),
        row(12, 7, query=None),
    )
    plain = ep.held_episodes(frame, session_end=20.0)
    categorical = frame.astype({"state": "category", "query": "category"})
    pd.testing.assert_frame_equal(
        ep.held_episodes(categorical, session_end=20.0).astype({"last_query": object}),
        plain.astype({"last_query": object}),
    )


# -- stacks ----------------------------------------------------------------------------------


def test_stacks_during_takes_only_the_owners_samples_inside_the_episode() -> None:
    # GIVEN worker 2001 holds a transaction from 10.5, last seen at 12, gone at 13
    held = ep.held_episodes(
        activity(
            row(11, 7, state=IDLE_TX, xact_start=10.5, state_change=10.6),
            row(12, 7, state=IDLE_TX, xact_start=10.5, state_change=10.6),
            row(13, 7),
        ),
        session_end=20.0,
    )
    stacks = samples(
        (10.4, 2001, "main;before"),  # before the start
        (10.5, 2001, "main;await_http"),  # at the start: inside
        (11.0, 2001, "main;await_http"),
        (12.0, 2002, "main;other_worker"),  # another worker
        (12.0, 2001, "main;render"),  # at the last sighting: inside
        (12.5, 2001, "main;after"),  # after it: the transaction may have ended at 12
        (13.1, 2001, "main;after"),
    )
    # WHEN
    during = hold_stacks.stacks_during(held, stacks)
    # THEN
    assert list(during.columns) == list(hold_stacks.STACKS_DURING_COLUMNS)
    assert list(during["stack"]) == ["main;await_http", "main;render"]
    assert list(during["samples"]) == [2, 1]
    assert list(during["share"]) == pytest.approx([2 / 3, 1 / 3])
    assert set(during["episode_id"]) == {0}


def test_threads_active_keeps_running_samples_only() -> None:
    held = ep.held_episodes(
        activity(row(11, 7, state="active", xact_start=10.0), row(12, 7)), session_end=20.0
    )
    stacks = pd.concat(
        [
            samples((11.0, 2001, "main;select_loop"), active=False),
            samples((10.5, 2001, "main;query"), active=True),
        ],
        ignore_index=True,
    )
    assert list(hold_stacks.stacks_during(held, stacks)["stack"]) == [
        "main;query",
        "main;select_loop",
    ]
    assert list(hold_stacks.stacks_during(held, stacks, threads="active")["stack"]) == [
        "main;query"
    ]
    with pytest.raises(UsageError):
        hold_stacks.stacks_during(held, stacks, threads="idle")  # type: ignore[arg-type]


def test_float_and_datetime_sample_times_agree() -> None:
    held = ep.held_episodes(
        activity(row(11, 7, state="active", xact_start=10.0), row(12, 7)), session_end=20.0
    )
    stacks = samples((10.5, 2001, "a"), (11.5, 2001, "b"), (12.5, 2001, "c"))
    as_floats = stacks.assign(taken_at=[10.5, 11.5, 12.5])
    pd.testing.assert_frame_equal(
        hold_stacks.stacks_during(held, stacks), hold_stacks.stacks_during(held, as_floats)
    )


def test_a_worker_that_died_keeps_its_episode_and_its_samples_stop() -> None:
    # GIVEN worker 2001 dies at 11.6 holding a transaction: its samples stop, its backend
    # is gone at the snapshot of 13; worker 2002 holds one too, until the end
    frame = activity(
        row(11, 7, state=IDLE_TX, xact_start=10.0, state_change=10.1),
        row(12, 7, state=IDLE_TX, xact_start=10.0, state_change=10.1),
        row(11, 8, state="active", xact_start=10.5, owner=2002),
        row(12, 8, state="active", xact_start=10.5, owner=2002),
        row(13, 8, state="active", xact_start=10.5, owner=2002),
    )
    held = ep.held_episodes(frame, session_end=14.0)
    stacks = samples(
        (11.0, 2001, "handler;http_call"),
        (11.5, 2001, "handler;http_call"),
        (11.0, 2002, "handler;query"),
        (12.0, 2002, "handler;query"),
        (13.5, 2002, "handler;query"),
    )
    # THEN both episodes are there, the dead worker's ended at 13
    assert list(held["owner_pid"]) == [2001, 2002]
    assert list(held["end"].fillna(-1)) == [13.0, -1]
    assert list(held["open"]) == [False, True]
    # and its stacks are the two it had before dying; the open one's run to its last sighting
    # (13): at 13.5 it may have ended already
    during = hold_stacks.stacks_during(held, stacks)
    assert during.groupby("episode_id")["samples"].sum().to_dict() == {0: 2, 1: 2}


def test_unowned_episodes_have_no_stacks() -> None:
    held = ep.held_episodes(
        activity(row(11, 7, state="active", xact_start=10.0, owner=None), row(12, 7, owner=None)),
        session_end=20.0,
    )
    assert hold_stacks.stacks_during(held, samples((11.0, 2001, "a"))).empty
    assert hold_stacks.hold_profile(held, samples((11.0, 2001, "a")), interval=0.5) == Counter()


def test_an_owner_without_samples_borrows_no_other_workers_stacks() -> None:
    # GIVEN the owner 2005 was never dumped (not a target), 2001 and 2009 were
    held = ep.held_episodes(
        activity(row(11, 7, state="active", xact_start=10.0, owner=2005), row(12, 7, owner=2005)),
        session_end=20.0,
    )
    stacks = samples((11.0, 2001, "a"), (11.0, 2009, "b"))
    assert hold_stacks.stacks_during(held, stacks).empty
    assert hold_stacks.hold_profile(held, stacks, interval=0.5) == Counter()


def test_hold_profile_weighs_by_concurrent_episodes() -> None:
    # GIVEN worker 2001 holds two connections from 10 (seen until 13), a third from 11.5
    # (seen until 12)
    frame = activity(
        *(row(t, p, state="active", xact_start=10.0) for t in (11, 12, 13) for p in (7, 8)),
        row(11.5, 9, state="active", xact_start=11.5),
        row(12, 9, state="active", xact_start=11.5),
        row(14, 7),
    )
    held = ep.held_episodes(frame, session_end=20.0, snapshots=[11, 11.5, 12, 13, 14])
    stacks = samples(
        (10.5, 2001, "handler;query"),  # 2 connections held
        (11.75, 2001, "handler;render"),  # 3 held
        (12.5, 2001, "handler;render"),  # 2 held (the third was last seen at 12)
        (12.5, 2002, "handler;elsewhere"),  # another worker: nothing held
    )
    # WHEN
    profile = hold_stacks.hold_profile(held, stacks, interval=0.5)
    # THEN milliseconds: 0.5 s x connections held at each sample
    assert profile == Counter({"handler;render": (3 + 2) * 500, "handler;query": 2 * 500})
    with pytest.raises(UsageError):
        hold_stacks.hold_profile(held, stacks, interval=0)


def test_hold_profile_shares_a_dump_among_the_threads_it_saw() -> None:
    # GIVEN one connection held from 10 to 12 by a worker whose dump at 11 saw two threads
    held = ep.held_episodes(
        activity(row(11, 7, state="active", xact_start=10.0), row(12, 7)), session_end=20.0
    )
    stacks = samples((11.0, 2001, "loop;wait_for_pool"), (11.0, 2001, "pool_thread;idle"))
    # WHEN
    profile = hold_stacks.hold_profile(held, stacks, interval=1.0)
    # THEN the second of connection held is split, not counted once per thread
    assert profile == Counter({"loop;wait_for_pool": 500, "pool_thread;idle": 500})


def tasks(*rows: tuple[float, int, str, tuple[int, ...]]) -> pd.DataFrame:
    """Task samples ``(taken_at, worker_pid, stack, backends)``, as the tasks reader gives."""
    frame = samples(*((t, w, s) for t, w, s, _ in rows))
    frame["backends"] = [b for _, _, _, b in rows]
    return frame


def test_a_task_naming_the_backend_takes_the_whole_hold() -> None:
    # GIVEN worker 2001 holds backend 7 from 10 to 12; at 11 it has three tasks, one of which
    # references backend 7 from its frames (the holder, suspended at an await)
    held = ep.held_episodes(
        activity(row(11, 7, state="idle in transaction", xact_start=10.0), row(12, 7)),
        session_end=20.0,
    )
    rounds = tasks(
        (11.0, 2001, "serve;main_loop;sleep", ()),
        (11.0, 2001, "invoke_tool;call_tool;post", (7,)),
        (11.0, 2001, "list_tools;page", (8,)),
    )
    # WHEN
    profile, owners = hold_stacks.hold_attribution(held, rounds, interval=1.0)
    # THEN the second goes to the holder alone, and its owner is named
    assert profile == Counter({"invoke_tool;call_tool;post": 1000})
    assert owners == {"invoke_tool;call_tool;post": [2001]}
    assert list(hold_stacks.stacks_during(held, rounds)["stack"]) == ["invoke_tool;call_tool;post"]


def test_without_a_named_holder_a_round_is_shared_among_its_tasks() -> None:
    # GIVEN the round at 11 names no backend of the episode (held through an object the
    # sampler cannot see); the round at 11.5 names it from two tasks
    held = ep.held_episodes(
        activity(
            row(11, 7, state="idle in transaction", xact_start=10.0),
            row(11.5, 7, state="idle in transaction", xact_start=10.0),
            row(12, 7),
        ),
        session_end=20.0,
        snapshots=[11, 11.5, 12],
    )
    rounds = tasks(
        (11.0, 2001, "a", ()),
        (11.0, 2001, "b", (9,)),
        (11.5, 2001, "a", (7,)),
        (11.5, 2001, "b", (7, 9)),
        (11.5, 2001, "c", ()),
    )
    # WHEN
    profile = hold_stacks.hold_profile(held, rounds, interval=1.0)
    # THEN 11: halves for a and b; 11.5: halves for the two that named backend 7, none for c
    assert profile == Counter({"a": 1000, "b": 1000})


def test_a_round_naming_no_holder_is_shared_among_requests_not_server_tasks() -> None:
    # GIVEN no task of the round names backend 7, two are requests (an endpoint), one is the
    # server's main loop
    held = ep.held_episodes(
        activity(row(11, 7, state="idle in transaction", xact_start=10.0), row(12, 7)),
        session_end=20.0,
    )
    rounds = tasks(
        (11.0, 2001, "serve;main_loop", ()),
        (11.0, 2001, "request;solve_dependencies", ()),
        (11.0, 2001, "request;handler", ()),
    )
    rounds["endpoint"] = [None, "endpoint GET /a (a)", "endpoint GET /b (b)"]
    # WHEN
    profile = hold_stacks.hold_profile(held, rounds, interval=1.0)
    # THEN the requests share the second; the main loop gets none
    assert profile == Counter({"request;solve_dependencies": 500, "request;handler": 500})


def test_hold_profile_renders_as_a_flamegraph() -> None:
    from profiler.render.flamegraph import render_svg

    held = ep.held_episodes(
        activity(row(11, 7, state="active", xact_start=10.0), row(12, 7)), session_end=20.0
    )
    profile = hold_stacks.hold_profile(held, samples((11.0, 2001, "main;query")), interval=0.25)
    assert profile == Counter({"main;query": 250})
    assert "query" in render_svg(profile, title="held", unit="ms held")


# -- counts over time ------------------------------------------------------------------------


def test_connections_held_counts_per_snapshot_and_owner_with_zeros() -> None:
    frame = activity(
        row(10, 7, state="active", xact_start=9.0),
        row(10, 8, state=IDLE_TX, xact_start=9.5),
        row(10, 9, state="active", xact_start=9.9, owner=None),
        row(11, 7),
        row(11, 8),
        row(11, 9, owner=None),
        row(12, 7, state="active", xact_start=11.5, owner=2002),
    )
    held = held_counts.connections_held(frame)
    assert list(held.columns) == list(held_counts.HELD_COLUMNS)
    got = {
        (t, None if o is pd.NA else int(o)): h
        for t, o, h in held.itertuples(index=False, name=None)
    }
    assert got == {
        (10.0, None): 1,
        (10.0, 2001): 2,
        (10.0, 2002): 0,
        (11.0, None): 0,
        (11.0, 2001): 0,
        (11.0, 2002): 0,
        (12.0, None): 0,
        (12.0, 2001): 0,
        (12.0, 2002): 1,
    }


def test_memory_alignment_takes_the_nearest_earlier_count() -> None:
    held = held_counts.connections_held(
        activity(
            row(10, 7, state="active", xact_start=9.0),
            row(11, 7, state="active", xact_start=9.0),
            row(11, 8, state="active", xact_start=10.5),
            row(12, 7),
            row(12, 8),
        )
    )
    rss = pd.DataFrame(
        {
            "taken_at": pd.to_datetime([9.5, 10.2, 11.9, 12.1, 11.0], unit="s", utc=True),
            "worker_pid": [2001, 2001, 2001, 2001, 2003],
            "rss_bytes": [100, 110, 120, 130, 500],
        }
    )
    aligned = held_counts.memory_alignment(held, rss)
    assert list(aligned.columns) == list(held_counts.ALIGNMENT_COLUMNS)
    assert list(aligned["taken_at"]) == [9.5, 10.2, 11.0, 11.9, 12.1]
    assert list(aligned["worker_pid"]) == [2001, 2001, 2003, 2001, 2001]
    # before the first snapshot: unknown; 2003 never held: 0; then 1, 2, 0
    assert list(aligned["held"].astype(object).fillna(-1)) == [-1, 1, 0, 2, 0]
    assert list(aligned["rss_bytes"]) == [100, 110, 500, 120, 130]


# -- empty input -----------------------------------------------------------------------------


def test_empty_input_gives_empty_frames_with_the_columns() -> None:
    nothing = activity(row(10, 7)).iloc[0:0]
    no_samples = samples().iloc[0:0]
    held = ep.held_episodes(nothing, session_end=1.0)
    assert held.empty
    assert list(held.columns) == list(ep.EPISODE_COLUMNS)
    assert list(ep.held_episodes(activity(row(10, 7)), session_end=1.0).columns) == list(
        ep.EPISODE_COLUMNS
    )
    assert list(hold_stacks.stacks_during(held, no_samples).columns) == list(
        hold_stacks.STACKS_DURING_COLUMNS
    )
    assert hold_stacks.hold_profile(held, no_samples, interval=1.0) == Counter()
    counts = held_counts.connections_held(nothing)
    assert list(counts.columns) == list(held_counts.HELD_COLUMNS)
    empty_rss = pd.DataFrame({"taken_at": [], "worker_pid": [], "rss_bytes": []})
    assert list(held_counts.memory_alignment(counts, empty_rss).columns) == list(
        held_counts.ALIGNMENT_COLUMNS
    )
    aligned = held_counts.memory_alignment(
        counts,
        pd.DataFrame(
            {
                "taken_at": [datetime(2025, 1, 1, tzinfo=timezone.utc)],
                "worker_pid": [1],
                "rss_bytes": [5],
            }
        ),
    )
    assert aligned["held"].isna().all()


# -- a property: the vectorised episodes agree with a plain loop ------------------------------


def reference_episodes(frame: pd.DataFrame) -> list[tuple[int, float, float, float, int]]:
    """(pid, start, first_seen, last_seen, samples) per episode, the slow obvious way."""
    seen: dict[tuple[int, float, float], list[float]] = {}
    for r in frame.sort_values("taken_at").itertuples():
        if not pd.isna(r.xact_start):
            seen.setdefault((r.pid, r.backend_start, r.xact_start), []).append(r.taken_at)
    return sorted(
        (pid, xs, min(times), max(times), len(times)) for (pid, _, xs), times in seen.items()
    )


@st.composite
def recordings(draw: st.DrawFn) -> pd.DataFrame:
    snapshots = draw(st.integers(min_value=1, max_value=12))
    backends = draw(st.integers(min_value=1, max_value=4))
    rows = []
    for pid in range(1, backends + 1):
        xact: float | None = None
        start = 0.0
        for tick in range(snapshots):
            move = draw(st.sampled_from(["stay", "begin", "end", "reconnect"]))
            if move == "begin":
                xact = tick - 0.5
            elif move == "end":
                xact = None
            elif move == "reconnect":
                xact, start = None, tick - 0.25
            rows.append(
                row(
                    float(tick),
                    pid,
                    state="idle" if xact is None else IDLE_TX,
                    xact_start=xact,
                    state_change=None if xact is None else xact + 0.1,
                    backend_start=start,
                )
            )
    order = draw(st.permutations(range(len(rows))))
    return activity(*(rows[i] for i in order))


@settings(max_examples=60, deadline=None)
@given(recordings())
def test_episodes_match_a_plain_loop(frame: pd.DataFrame) -> None:
    held = ep.held_episodes(frame, session_end=100.0)
    got = sorted(
        zip(
            held["pid"],
            held["start"],
            held["first_seen"],
            held["last_seen"],
            held["samples"],
            strict=True,
        )
    )
    assert got == reference_episodes(frame)
    snapshots = np.unique(frame["taken_at"])
    for r in held.itertuples():
        later = snapshots[snapshots > r.last_seen]
        assert (r.end == later[0]) if later.size else (r.open and math.isnan(r.end))
        assert r.start <= r.first_seen <= r.last_seen


# -- attribution from task samples -----------------------------------------------------------


def task_rounds(*rows: tuple[float, int, int, str, tuple[int, ...]]) -> pd.DataFrame:
    """Task samples ``(taken_at, worker_pid, task_id, stack, backends)``, each a request."""
    frame = tasks(*((t, w, s, b) for t, w, _, s, b in rows))
    frame["task_id"] = [task for _, _, task, _, _ in rows]
    frame["endpoint"] = "endpoint GET /a (a)"
    return frame


def test_the_task_that_named_the_backend_gets_its_rounds_and_no_one_else() -> None:
    # GIVEN backend 7 in a transaction from 10 (seen at 11, 12; gone at 13); task 1 names it
    # at 10.5; at 11.5 task 1 is there but its locals were not read (running); at 12.0 task 1
    # is gone from the round (an unresolved round of a joined transaction)
    held = ep.held_episodes(
        activity(
            row(11, 7, state=IDLE_TX, xact_start=10.0),
            row(12, 7, state=IDLE_TX, xact_start=10.0),
            row(13, 7),
        ),
        session_end=20.0,
    )
    rounds = task_rounds(
        (10.5, 2001, 1, "a;hold;post", (7,)),
        (10.5, 2001, 2, "b;other", ()),
        (11.5, 2001, 1, "a;hold;render", ()),
        (11.5, 2001, 2, "b;other", ()),
        (12.0, 2001, 2, "b;other", ()),
    )
    # WHEN
    found = attribute_tasks(held, rounds, interval=0.5)
    # THEN the holder's two rounds are its own, the third is nobody's
    assert found.profile == Counter({"a;hold;post": 500, "a;hold;render": 500})
    assert found.kinds == {0: "task"}
    assert found.millis == {"task": 1000}
    assert found.owners == {"a;hold;post": [2001], "a;hold;render": [2001]}


def test_a_transaction_no_task_held_goes_to_the_worker_fallback_labelled() -> None:
    # GIVEN backend 7 seen once, no task naming it; two requests and the server's loop
    held = ep.held_episodes(
        activity(row(11, 7, state=IDLE_TX, xact_start=9.0), row(12, 7)), session_end=20.0
    )
    rounds = task_rounds((10.5, 2001, 1, "a;post", ()), (10.5, 2001, 2, "b;query", ()))
    rounds = pd.concat(
        [rounds, tasks((10.5, 2001, "serve;main_loop", ())).assign(task_id=3, endpoint=None)],
        ignore_index=True,
    )
    # WHEN
    found = attribute_tasks(held, rounds, interval=1.0)
    # THEN the requests share the round, under the fallback's own root frame
    assert found.profile == Counter(
        {f"{FALLBACK_ROOT};a;post": 500, f"{FALLBACK_ROOT};b;query": 500}
    )
    assert found.kinds == {0: "worker-fallback"}
    assert describe(f"{FALLBACK_ROOT};a;post").fallback


def test_a_transaction_seen_once_is_held_as_long_as_it_was_seen() -> None:
    # GIVEN a transaction that began 0.03 s before the only snapshot that saw it, and a
    # 1 s round of its holder inside that window
    held = ep.held_episodes(
        activity(row(11, 7, state=IDLE_TX, xact_start=10.97), row(12, 7)), session_end=20.0
    )
    rounds = task_rounds((10.99, 2001, 1, "a;hold", (7,)))
    # WHEN
    found = attribute_tasks(held, rounds, interval=1.0)
    # THEN it held 30 ms, not the round's second
    assert held["duration"].iloc[0] == pytest.approx(0.03)
    assert found.profile == Counter({"a;hold": 30})


def test_the_holder_task_extends_what_was_seen_but_not_into_the_next_transaction() -> None:
    # GIVEN backend 7: a transaction from 10 seen at 11 (gone at 13), the next from 12.5
    # seen at 13 (gone at 14); task 1 names it at 10.5, 11.5 and 12.0, task 2 at 12.7
    held = ep.held_episodes(
        activity(
            row(11, 7, state=IDLE_TX, xact_start=10.0),
            row(13, 7, state=IDLE_TX, xact_start=12.5),
            row(14, 7),
        ),
        session_end=20.0,
        snapshots=[11, 12.9, 13, 14],
    )
    rounds = task_rounds(
        (10.5, 2001, 1, "a", (7,)),
        (11.5, 2001, 1, "a", (7,)),
        (12.0, 2001, 1, "a", (7,)),
        (12.7, 2001, 2, "b", (7,)),
    )
    # WHEN
    windows = observed_windows(held, rounds)
    # THEN the first runs to its holder's last naming (12.0), not to task 2's (12.7, the next
    # transaction's), and the second is as seen
    assert list(windows["duration"]) == pytest.approx([2.0, 0.5])
    assert list(held["duration"]) == pytest.approx([1.0, 0.5])


# -- the window join of sightings ------------------------------------------------------------


@st.composite
def windows_and_sightings(draw: st.DrawFn) -> tuple[Any, ...]:
    """Episodes keyed (worker, value) with windows that may overlap, touch or be NaN, and
    sightings on a small grid of times so that boundaries coincide often."""
    grid = st.integers(0, 12).map(float)
    key = st.tuples(st.integers(-1, 2), st.integers(-1, 3))
    episodes = draw(
        st.lists(st.tuples(key, grid, st.one_of(grid, st.just(math.nan))), min_size=0, max_size=12)
    )
    sightings = draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), grid), max_size=20))
    worker = np.array([k[0] for k, _, _ in episodes], dtype=np.int64)
    value = np.array([k[1] for k, _, _ in episodes], dtype=np.int64)
    low = np.array([lo for _, lo, _ in episodes], dtype=np.float64)
    high = np.array([lo + hi for _, lo, hi in episodes], dtype=np.float64)
    named = pd.DataFrame(
        {
            "worker_pid": pd.array([s[0] for s in sightings], dtype="Int64"),
            "taken_at": np.array([s[2] for s in sightings], dtype=np.float64),
            "task_id": np.arange(len(sightings), dtype=np.int64),
            "value": np.array([s[1] for s in sightings], dtype=np.int64),
        }
    )
    return (worker, value), low, high, named


@settings(max_examples=200, deadline=None)
@given(windows_and_sightings())
def test_window_pairs_match_every_pair_tested(case: tuple[Any, ...]) -> None:
    """The ranked searchsorted join gives exactly the pairs a test of every (episode,
    sighting) keeps: same key, no -1 in it, ``low <= taken_at <= high``, NaN never."""
    (worker, value), low, high, named = case
    episode, row = window_pairs((worker, value), low, high, named)
    expected = sorted(
        (i, j)
        for i in range(worker.size)
        for j in range(len(named))
        if worker[i] >= 0
        and value[i] >= 0
        and worker[i] == named["worker_pid"].iloc[j]
        and value[i] == named["value"].iloc[j]
        and low[i] <= named["taken_at"].iloc[j] <= high[i]
    )
    assert sorted(zip(episode.tolist(), row.tolist(), strict=True)) == expected
