"""Findings and code paths on hand-built frames: no PostgreSQL, no ptrace, just the rules.

Episode frames carry :data:`profiler.analysis.episodes.EPISODE_COLUMNS`; times
are small numbers (session from 0 to 100 s) so every expected value can be
worked out by hand in the comment above it.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from profiler.analysis import code_paths as cp
from profiler.analysis import episodes as ep
from profiler.analysis import findings as fi
from profiler.analysis import held_counts
from profiler.analysis.findings import Evidence, Finding, Thresholds

MIB = 2**20
IDLE_TX = "idle in transaction"

UVICORN = "run (uvicorn/server.py:63);_serve (uvicorn/server.py:70)"
EVENT_LOOP = (
    "run_until_complete (asyncio/base_events.py:653);_run_once (asyncio/base_events.py:1922)"
)
HANDLER = (
    f"{UVICORN};{EVENT_LOOP};__call__ (starlette/routing.py:74);"
    "invoke_tool (profiler/lab/gateway/held.py:118);call_tool (tool_calls.py:49)"
)
HTTPX = "post (httpx/_client.py:1859);request (httpx/_client.py:1540)"
CALLING_DOWNSTREAM = f"{HANDLER};{HTTPX};send (httpx/_client.py:1620)"
CALLING_DOWNSTREAM_DEEPER = f"{HANDLER};{HTTPX};send (httpx/_client.py:1629);recv (ssl.py:1296)"
QUERYING = (
    f"{UVICORN};{EVENT_LOOP};list_tools (profiler/lab/gateway/held.py:86);"
    "execute (sqlalchemy/orm/session.py:2308);_execute_context (sqlalchemy/engine/base.py:1815)"
)
IDLE_LOOP = f"{UVICORN};{EVENT_LOOP};select (selectors.py:468)"
POOL_WAIT = (
    "list_tools (app.py:12);connection (sqlalchemy/orm/session.py:2010);"
    "_do_get (sqlalchemy/pool/impl.py:167);wait (threading.py:324)"
)


# -- builders --------------------------------------------------------------------------------


def episode(
    pid: int = 7,
    *,
    owner: int | None = 2001,
    start: float = 10.0,
    end: float | None = 20.0,
    max_idle_age: float | None = 2.0,
    idle_seconds: float | None = None,
    query: str | None = "SELECT 1",
) -> dict[str, Any]:
    """One :func:`held_episodes` row; ``end`` None means still open at the session's end."""
    return {
        "pid": pid,
        "backend_start": 1.0,
        "xact_start": start,
        "owner_pid": owner,
        "owner_cmdline": None if owner is None else f"gunicorn: worker {owner}",
        "owner_via": None,
        "owner_port": None,
        "owner_label": None,
        "start": start,
        "first_seen": start + 1,
        "last_seen": (end if end is not None else 100.0) - 1,
        "end": np.nan if end is None else end,
        "open": end is None,
        "duration": (100.0 if end is None else end) - start,
        "duration_max": (100.0 if end is None else end) - start,
        "idle_seconds": (
            (0.0 if max_idle_age is None else max_idle_age)
            if idle_seconds is None
            else idle_seconds
        ),
        "max_idle_age": np.nan if max_idle_age is None else max_idle_age,
        "queries": () if query is None else (query,),
        "last_query": query,
        "application_name": "gateway",
        "samples": 3,
    }


def episodes(*rows: dict[str, Any]) -> pd.DataFrame:
    if not rows:
        return ep.empty_episodes()
    frame = pd.DataFrame(list(rows))
    frame["owner_pid"] = frame["owner_pid"].astype("Int64")
    frame["owner_port"] = frame["owner_port"].astype("Int64")
    frame.insert(0, "episode_id", np.arange(len(frame), dtype=np.int64))
    ordered: pd.DataFrame = frame[list(ep.EPISODE_COLUMNS)]
    return ordered


def held(rows: dict[int | None, list[int]], *, every: float = 1.0) -> pd.DataFrame:
    """:func:`connections_held` rows: owner -> its count at snapshots 0, ``every``, ..."""
    records = [
        {"taken_at": i * every, "owner_pid": owner, "held": count}
        for owner, counts in rows.items()
        for i, count in enumerate(counts)
    ]
    frame: pd.DataFrame = pd.DataFrame(records, columns=["taken_at", "owner_pid", "held"])
    frame["owner_pid"] = frame["owner_pid"].astype("Int64")
    return frame


def stack_samples(*rows: tuple[float, int, str]) -> pd.DataFrame:
    """``(taken_at, worker_pid, stack)``, taken_at as UTC datetimes as the readers give them."""
    frame: pd.DataFrame = pd.DataFrame(
        {
            "worker_pid": [w for _, w, _ in rows],
            "taken_at": pd.to_datetime([t for t, _, _ in rows], unit="s", utc=True),
            "stack": [s for _, _, s in rows],
            "active": [False] * len(rows),
        }
    )
    return frame


def rss(pid: int, points: list[tuple[float, int]]) -> pd.DataFrame:
    frame: pd.DataFrame = pd.DataFrame(
        {
            "taken_at": [t for t, _ in points],
            "worker_pid": [pid] * len(points),
            "rss_bytes": [int(b) for _, b in points],
        }
    )
    return frame


def vanished(
    pid: int,
    time: float,
    *,
    exit: str = "oom-killed",
    oom: str | None = "cgroup memory.events oom_kill 1",
    replacement: int | None = None,
    last_rss: int | None = 512 * MIB,
) -> dict[str, Any]:
    return {
        "time": time,
        "pid": pid,
        "event": "vanished",
        "exit": exit,
        "oom_evidence": oom,
        "replacement_pid": replacement,
        "last_rss_bytes": last_rss,
    }


def workers(*rows: dict[str, Any]) -> pd.DataFrame:
    frame: pd.DataFrame = pd.DataFrame(list(rows))
    for column in ("replacement_pid", "last_rss_bytes"):
        frame[column] = frame[column].astype("Int64")
    return frame


def evidence(**parts: Any) -> Evidence:
    return dataclasses.replace(Evidence.empty(session_start=0.0, session_end=100.0), **parts)


def only(found: list[Finding], rule: str) -> list[Finding]:
    return [f for f in found if f.rule == rule]


def the(found: list[Finding], rule: str) -> Finding:
    matching = only(found, rule)
    assert len(matching) == 1, [f.title for f in found]
    return matching[0]


def serialisable(found: list[Finding]) -> None:
    for finding in found:
        text = json.dumps(finding.to_json(), allow_nan=False, sort_keys=True)
        assert json.loads(text)["rule"] == finding.rule


# -- code paths ------------------------------------------------------------------------------


def test_application_frames_leave_out_servers_frameworks_and_the_standard_library() -> None:
    assert cp.application_frames(CALLING_DOWNSTREAM) == [
        "invoke_tool (profiler/lab/gateway/held.py:118)",
        "call_tool (tool_calls.py:49)",
    ]
    assert cp.application_frames(IDLE_LOOP) == []


@pytest.mark.parametrize(
    ("label", "mine"),
    [
        ("invoke_tool (profiler/lab/gateway/held.py:118)", True),
        ("invoke_tool (held.py:118)", True),
        ("handler (/srv/app/gateway/api.py:42)", True),
        ("<module> (busy.py:9)", True),
        ("run (uvicorn/server.py:63)", False),
        ("post (httpx/_client.py:1859)", False),
        ("select (selectors.py:468)", False),
        ("wait (threading.py:324)", False),
        ("_worker (concurrent/futures/thread.py:81)", False),
        ("_run_once (asyncio/base_events.py:1922)", False),
        ("_run_module_as_main (<frozen runpy>:198)", False),
        ("post (/srv/app/.venv/lib/python3.11/site-packages/httpx/_client.py:1859)", False),
        ("get (/usr/lib/python3/dist-packages/requests/api.py:73)", False),
        ("select (/usr/lib/python3.11/selectors.py:468)", False),
        ("epoll_wait (libc.so.6)", False),
        ("main", False),
        ("__init__ (<string>:3)", False),
    ],
)
def test_which_frames_are_the_applications(label: str, mine: bool) -> None:
    assert cp.is_application(label) is mine


def test_a_code_path_names_the_handler_and_the_call_it_waits_on() -> None:
    # GIVEN the handler's two frames, then httpx's post (the downstream call) and deeper frames
    path = cp.describe(CALLING_DOWNSTREAM)
    # THEN the path is the application frames plus post, and nothing below it
    assert path.frames == [
        "invoke_tool (profiler/lab/gateway/held.py:118)",
        "call_tool (tool_calls.py:49)",
    ]
    assert path.downstream == "post (httpx/_client.py:1859)"
    assert cp.code_path(CALLING_DOWNSTREAM) == (
        "invoke_tool (profiler/lab/gateway/held.py:118) → call_tool (tool_calls.py:49)"
        " → post (httpx/_client.py:1859)"
    )
    assert cp.short_names(path) == "invoke_tool → call_tool → post"


def test_a_code_path_keeps_the_innermost_application_frames() -> None:
    stack = "a (app.py:1);b (app.py:2);c (app.py:3);d (app.py:4);execute (sqlalchemy/orm/s.py:9)"
    assert cp.code_path(stack, max_frames=2) == (
        "c (app.py:3) → d (app.py:4) → execute (sqlalchemy/orm/s.py:9)"
    )


def test_an_application_leaf_has_no_downstream_call() -> None:
    path = cp.describe(f"{UVICORN};spin (busy.py:4)")
    assert (path.frames, path.downstream) == (["spin (busy.py:4)"], None)
    assert path.display == "spin (busy.py:4)"


def test_without_application_frames_the_innermost_frames_are_the_path() -> None:
    assert cp.code_path(IDLE_LOOP, max_frames=2) == (
        "_run_once (asyncio/base_events.py:1922) → select (selectors.py:468)"
    )
    assert cp.code_path("") == cp.NO_FRAMES  # an empty row in a table reads as a bug
    with pytest.raises(ValueError, match="max_frames"):
        cp.code_path(IDLE_LOOP, max_frames=0)


def test_the_caller_can_name_more_libraries() -> None:
    stack = "handler (app.py:3);call (vendorlib/client.py:10);inner (vendorlib/io.py:2)"
    assert (
        cp.code_path(stack)
        == "handler (app.py:3) → call (vendorlib/client.py:10) → inner (vendorlib/io.py:2)"
    )
    assert cp.code_path(stack, libraries={"vendorlib"}) == (
        "handler (app.py:3) → call (vendorlib/client.py:10)"
    )


def test_group_by_path_sums_stacks_that_differ_below_the_downstream_call() -> None:
    profile = Counter({CALLING_DOWNSTREAM: 3000, CALLING_DOWNSTREAM_DEEPER: 1000, QUERYING: 2000})
    profile[IDLE_LOOP] = 0  # zero weight: left out
    grouped = cp.group_by_path(profile)
    assert [(display, total) for display, total, _ in grouped] == [
        (cp.code_path(CALLING_DOWNSTREAM), 4000),
        (
            "list_tools (profiler/lab/gateway/held.py:86)"
            " → execute (sqlalchemy/orm/session.py:2308)",
            2000,
        ),
    ]
    assert grouped[0][2] == cp.application_frames(CALLING_DOWNSTREAM)


# -- nothing to say --------------------------------------------------------------------------


def test_empty_evidence_has_no_findings() -> None:
    assert fi.evaluate(Evidence.empty(session_start=0.0, session_end=100.0)) == []


def test_a_healthy_session_has_no_findings() -> None:
    # GIVEN transactions that never idled over the threshold (one never idled at all), a pool
    # never full, flat RSS well under its limit and a worker that only appeared
    found = fi.evaluate(
        evidence(
            episodes=episodes(episode(max_idle_age=0.01), episode(max_idle_age=None)),
            hold_profile=Counter({CALLING_DOWNSTREAM: 40}),
            held=held({2001: [0, 1, 0, 1]}),
            rss=rss(2001, [(0, 100 * MIB), (60, 100 * MIB)]),
            memory_limits={2001: 1024 * MIB},
            workers=pd.DataFrame({"time": [1.0], "pid": [2001], "event": ["appeared"]}),
        )
    )
    assert found == []


# -- idle-in-transaction ---------------------------------------------------------------------


def test_idle_in_transaction_counts_only_periods_over_the_threshold() -> None:
    # GIVEN four transactions, idle for at most 1.0 s (exactly the threshold: not over), 1.5, 2, 4 s
    frame = episodes(
        episode(1, max_idle_age=1.0),
        episode(2, max_idle_age=1.5, query="UPDATE   a\n SET x = 1"),
        episode(3, max_idle_age=2.0, idle_seconds=3.0, query="UPDATE a SET x = 1"),
        episode(4, owner=2002, max_idle_age=4.0, end=None, query="SELECT tools.*"),
    )
    # WHEN
    finding = the(fi.evaluate(evidence(episodes=frame)), "idle-in-transaction")
    # THEN three count; nearest-rank p50 of [1.5, 2, 4] is 2, p95 is 4
    assert finding.severity == "warning"
    assert finding.title == (
        "3 transactions idle in transaction over 1 s (p95 4 s, max 4 s) on 2 workers; 1 still open"
    )
    e = finding.evidence
    assert (e["episodes"], e["p50_idle_age"], e["p95_idle_age"], e["max_idle_age"]) == (
        3,
        2.0,
        4.0,
        4.0,
    )
    assert e["total_idle_seconds"] == pytest.approx(1.5 + 3.0 + 4.0)
    assert finding.score == pytest.approx(8.5)
    assert (e["still_open"], e["owner_unknown"]) == (1, 0)
    assert e["by_owner"] == [
        {
            "owner_pid": 2001,
            "owner_cmdline": "gunicorn: worker 2001",
            "episodes": 2,
            "max_idle_age": 2.0,
            "idle_seconds": 4.5,
            "open": 0,
        },
        {
            "owner_pid": 2002,
            "owner_cmdline": "gunicorn: worker 2002",
            "episodes": 1,
            "max_idle_age": 4.0,
            "idle_seconds": 4.0,
            "open": 1,
        },
    ]
    # whitespace normalised: the two UPDATEs are one query
    assert e["by_query"] == [
        {"query": "UPDATE a SET x = 1", "episodes": 2, "max_idle_age": 2.0},
        {"query": "SELECT tools.*", "episodes": 1, "max_idle_age": 4.0},
    ]


def test_idle_in_transaction_at_the_threshold_is_not_a_finding() -> None:
    frame = episodes(episode(max_idle_age=1.0))
    assert fi.evaluate(evidence(episodes=frame)) == []
    # a lower threshold makes it one
    found = fi.evaluate(evidence(episodes=frame), Thresholds(idle_in_transaction_seconds=0.5))
    assert the(found, "idle-in-transaction").evidence["episodes"] == 1


def test_idle_in_transaction_with_owners_unknown() -> None:
    # GIVEN one transaction of a local worker and two of backends no local process owns
    frame = episodes(
        episode(1, max_idle_age=3.0),
        episode(2, owner=None, max_idle_age=5.0),
        episode(3, owner=None, max_idle_age=2.0),
    )
    finding = the(fi.evaluate(evidence(episodes=frame)), "idle-in-transaction")
    assert finding.title == (
        "3 transactions idle in transaction over 1 s (p95 5 s, max 5 s) on 1 worker,"
        " 2 with owner unknown"
    )
    assert finding.evidence["owner_unknown"] == 2
    assert [o["owner_pid"] for o in finding.evidence["by_owner"]] == [2001]
    # all unknown: no worker to name
    alone = the(
        fi.evaluate(evidence(episodes=episodes(episode(owner=None)))), "idle-in-transaction"
    )
    assert alone.title == (
        "1 transaction idle in transaction over 1 s (p95 2 s, max 2 s), owner unknown"
    )


@pytest.mark.parametrize(
    ("ages", "severity"),
    [
        ([9.9], "warning"),
        ([10.0], "critical"),  # ten times the threshold
        ([2.0] * 9, "warning"),
        ([2.0] * 10, "critical"),  # ten transactions
    ],
)
def test_idle_in_transaction_severity(ages: list[float], severity: str) -> None:
    frame = episodes(*(episode(i, max_idle_age=age) for i, age in enumerate(ages)))
    found = fi.evaluate(evidence(episodes=frame), Thresholds(stuck_query_seconds=1000))
    assert the(found, "idle-in-transaction").severity == severity


# -- held-code-path --------------------------------------------------------------------------


def test_held_code_path_names_the_top_path_and_its_workers() -> None:
    # GIVEN 300 s held calling downstream (two stacks, one path) and 100 s querying
    profile = Counter(
        {CALLING_DOWNSTREAM: 200_000, CALLING_DOWNSTREAM_DEEPER: 100_000, QUERYING: 100_000}
    )
    owners = {CALLING_DOWNSTREAM: [2002, 2001], CALLING_DOWNSTREAM_DEEPER: [2003], QUERYING: [2001]}
    found = fi.evaluate(
        evidence(
            episodes=episodes(episode(max_idle_age=30.0)), hold_profile=profile, hold_owners=owners
        )
    )
    finding = the(found, "held-code-path")
    # THEN the top path holds 75 % of 400 s: critical
    assert finding.severity == "critical"
    assert finding.title == (
        "invoke_tool → call_tool → post held connections 75% of 400 s (workers 2001, 2002, 2003)"
    )
    assert finding.score == pytest.approx(300.0)
    assert finding.evidence["total_seconds_held"] == 400.0
    assert finding.evidence["paths_total"] == 2
    top, second = finding.evidence["paths"]
    assert top == {
        "path": cp.code_path(CALLING_DOWNSTREAM),
        "frames": [
            "invoke_tool (profiler/lab/gateway/held.py:118)",
            "call_tool (tool_calls.py:49)",
        ],
        "downstream": "post (httpx/_client.py:1859)",
        "seconds_held": 300.0,
        "share": 0.75,
        "owner_pids": [2001, 2002, 2003],
        "attribution": None,  # the evidence did not say (hold_kinds)
    }
    assert (second["seconds_held"], second["share"], second["owner_pids"]) == (100.0, 0.25, [2001])


def test_the_worker_fallback_is_labelled_and_leaves_shares_and_severity_to_the_holders() -> None:
    # GIVEN 100 s attributed to the task that held the connections (querying), and 300 s
    # by the worker fallback (the worker's requests meanwhile were calling downstream)
    fallback = f"{cp.FALLBACK_ROOT};{CALLING_DOWNSTREAM}"
    profile = Counter({fallback: 300_000, QUERYING: 100_000})
    found = fi.evaluate(
        evidence(
            episodes=episodes(episode(max_idle_age=30.0)),
            hold_profile=profile,
            hold_kinds={fallback: "worker-fallback", QUERYING: "task"},
        )
    )
    finding = the(found, "held-code-path")
    # THEN the holder's path leads with all of the attributed time, the fallback counted aside
    assert finding.title == (
        "list_tools → execute held connections 100% of 100 s attributed "
        "(300 s more by the worker fallback)"
    )
    assert finding.severity == "critical"
    assert [p["attribution"] for p in finding.evidence["paths"]] == ["task"]
    assert finding.evidence["attributed_seconds"] == {"task": 100.0, "worker-fallback": 300.0}
    assert finding.evidence["share_of"] == "attributed"


def test_a_session_attributed_only_by_the_worker_fallback_says_so_and_is_never_critical() -> None:
    fallback = f"{cp.FALLBACK_ROOT};{CALLING_DOWNSTREAM}"
    found = fi.evaluate(
        evidence(
            episodes=episodes(episode(max_idle_age=30.0)),
            hold_profile=Counter({fallback: 300_000}),
        )
    )
    finding = the(found, "held-code-path")
    assert finding.severity == "warning"
    assert finding.title.startswith("(worker fallback) invoke_tool → call_tool → post held ")
    assert finding.evidence["paths"][0]["attribution"] == "worker-fallback"
    assert finding.evidence["paths"][0]["path"].startswith(cp.FALLBACK_LABEL)


def test_held_code_path_is_a_warning_below_half_and_keeps_top_paths() -> None:
    profile = Counter({CALLING_DOWNSTREAM: 400, QUERYING: 350, IDLE_LOOP: 250})
    found = fi.evaluate(
        evidence(episodes=episodes(episode(max_idle_age=3.0)), hold_profile=profile),
        Thresholds(top_paths=2),
    )
    finding = the(found, "held-code-path")
    assert finding.severity == "warning"
    # no owners given: no workers named
    assert finding.title == "invoke_tool → call_tool → post held connections 40% of 1 s"
    assert [p["seconds_held"] for p in finding.evidence["paths"]] == [0.4, 0.35]
    assert finding.evidence["paths_total"] == 3


def test_held_code_path_needs_a_transaction_idle_over_the_threshold() -> None:
    # GIVEN a fresh-session profile: transactions held for milliseconds, never idle over 1 s
    profile = Counter({QUERYING: 5000})
    assert (
        fi.evaluate(evidence(episodes=episodes(episode(max_idle_age=0.2)), hold_profile=profile))
        == []
    )
    # and an idle one without any profile says nothing about paths
    found = fi.evaluate(evidence(episodes=episodes(episode(max_idle_age=3.0))))
    assert only(found, "held-code-path") == []


# -- stuck-query -----------------------------------------------------------------------------


def test_stuck_query_groups_one_text_across_transactions() -> None:
    text = "SELECT tools.* FROM tools\n   WHERE tools.id = $1"
    frame = episodes(
        episode(1, max_idle_age=64.0, query=text),
        episode(2, owner=2002, max_idle_age=221.0, end=None, query=" ".join(text.split())),
        episode(3, owner=None, max_idle_age=100.0, query=text),
        episode(4, max_idle_age=9.9, query=text),  # under 10 s: not stuck
        episode(5, max_idle_age=10.0, query="UPDATE users SET seen = now()"),  # exactly 10 s: stuck
    )
    found = only(fi.evaluate(evidence(episodes=frame)), "stuck-query")
    assert [f.title for f in found] == [
        "`SELECT tools.* FROM tools WHERE tools.id = $1` held idle in transaction"
        " 64\N{EN DASH}221 s in 3 transactions (workers 2001, 2002)",
        "`UPDATE users SET seen = now()` held idle in transaction 10 s in 1 transaction"
        " (worker 2001)",
    ]
    assert all(f.severity == "warning" for f in found)
    e = found[0].evidence
    assert e["query"] == "SELECT tools.* FROM tools WHERE tools.id = $1"
    assert (e["episodes"], e["min_idle_age"], e["max_idle_age"]) == (3, 64.0, 221.0)
    assert (e["owner_pids"], e["owner_unknown"], e["still_open"]) == ([2001, 2002], 1, 1)


def test_a_long_query_is_cut() -> None:
    text = "SELECT " + ", ".join(f"column_{i}" for i in range(100)) + " FROM t"
    found = the(
        fi.evaluate(evidence(episodes=episodes(episode(max_idle_age=12.0, query=text)))),
        "stuck-query",
    )
    assert len(found.evidence["query"]) == fi.QUERY_CHARS
    assert found.evidence["query"].endswith("…")
    assert found.title.startswith("`SELECT column_0, column_1, ")
    assert " ...` held idle in transaction 12 s" in found.title


# -- pool-saturation -------------------------------------------------------------------------


def test_pool_saturation_with_a_told_cap_and_threads_waiting_is_critical() -> None:
    # GIVEN worker 2001 holding 5 (the cap it was told) at snapshots 2, 3, 4 of 0..4 (60 %),
    # snapshots a second apart, session ending at 5
    counts = held({2001: [1, 3, 5, 5, 5], 2002: [1, 1, 1, 1, 1]})
    waits = stack_samples(
        (0.5, 2001, POOL_WAIT),  # before the cap: not counted
        (2.5, 2001, POOL_WAIT),
        (3.5, 2001, QUERYING),
        (4.5, 2001, POOL_WAIT),
        (4.5, 2002, POOL_WAIT),  # another worker's
    )
    found = fi.evaluate(
        dataclasses.replace(
            evidence(held=counts, wait_samples=waits, pool_capacity=5), session_end=5.0
        )
    )
    finding = the(found, "pool-saturation")
    assert finding.severity == "critical"
    assert finding.title == (  # no load, no transaction: no hold time, no capacity line
        "worker 2001 at its pool cap of 5 (told) for 60% of snapshots (3 s);"
        " 2 stack samples waiting for a connection"
    )
    pool = finding.evidence.pop("pool")
    # AND one worker's finding, folded: its row is the per-worker table's only one
    (row,) = finding.evidence.pop("workers")
    assert (row["worker_pid"], row["severity"], row["title"]) == (
        2001,
        "critical",
        finding.title,
    )
    assert finding.evidence == {
        "worker_pid": 2001,
        "cap": 5,
        "cap_source": "told",
        "inferred": False,
        "max_held": 5,
        "snapshots": 5,
        "snapshots_at_cap": 3,
        "share_at_cap": 0.6,
        "seconds_at_cap": 3.0,
        "samples_at_cap": 3,
        "waiting_samples": 2,
        "waiting_share": 0.6667,
    }
    assert (pool["source"], pool["capacity"], pool["in_use_mean"]) == ("told", 5, 3.8)


def test_an_inferred_cap_is_never_critical_and_says_the_pool_size_is_unknown() -> None:
    # GIVEN the same worker, threads waiting, and no pool size read or told
    counts = held({2001: [1, 3, 5, 5, 5]})
    waits = stack_samples((2.5, 2001, POOL_WAIT), (4.5, 2001, POOL_WAIT))
    found = fi.evaluate(
        dataclasses.replace(evidence(held=counts, wait_samples=waits), session_end=5.0)
    )
    finding = the(found, "pool-saturation")
    # THEN a warning at most, which does not call the most seen a cap
    assert finding.severity == "warning"
    assert finding.title.startswith(
        "worker 2001 held 5 transactions at once (its most) for 60% of snapshots (3 s); "
        "pool size unknown, so not a cap; 2 stack samples waiting for a connection"
    )
    assert finding.evidence["cap"] is None and finding.evidence["inferred"] is True
    assert finding.evidence["cap_source"] == "unknown"


def test_an_inferred_cap_without_waits_is_info() -> None:
    counts = held({2001: [2, 2, 0, 0, 0]})
    finding = the(fi.evaluate(evidence(held=counts)), "pool-saturation")
    assert finding.severity == "info"
    assert finding.evidence["waiting_share"] is None
    assert "; no stack sample seen waiting for a connection" in finding.title


def test_a_told_cap_without_waits_is_a_warning() -> None:
    counts = held({2001: [2, 2, 0, 0, 0]})
    finding = the(fi.evaluate(evidence(held=counts, pool_capacity=2)), "pool-saturation")
    assert finding.severity == "warning"


def pools(pid: int, checked_out: list[int], waiting: list[int] | None = None, **pool: Any) -> Any:
    """Pool figures as the task sampler records them: one QueuePool, a round a second."""
    figures = {"size": 5, "max_overflow": 1, "timeout": 30.0, **pool}
    rows = [
        {
            "taken_at": float(i),
            "worker_pid": pid,
            "pool_id": 1,
            "pool_class": "QueuePool",
            **figures,
            "checked_out": out,
            "waiting": (waiting or [0] * len(checked_out))[i],
        }
        for i, out in enumerate(checked_out)
    ]
    frame = pd.DataFrame(rows)
    for column in ("size", "max_overflow", "checked_out", "waiting"):
        frame[column] = frame[column].astype("Int64")
    return frame


def test_pool_saturation_from_the_pool_read_in_the_worker() -> None:
    # GIVEN a pool of 5 + 1 read in worker 2001, all 6 out in rounds 2..4, 3 waiting in one,
    # while the snapshots only ever saw 2 transactions at once (checked out is not in a
    # transaction between statements)
    figures = pools(2001, [1, 3, 6, 6, 6], [0, 0, 0, 3, 0])
    counts = held({2001: [1, 2, 2, 2, 2]})
    found = fi.evaluate(
        dataclasses.replace(
            evidence(held=counts, pools=figures, served_rps=2.0, targets=(2001, 2002)),
            session_end=5.0,
        )
    )
    finding = the(found, "pool-saturation")
    # THEN it is critical, from the pool's own figures
    assert finding.severity == "critical"
    assert finding.title == (
        "worker 2001's QueuePool at its cap of 6 (5 + 1 overflow, read in the worker) for 60% "
        "of rounds (3 s); requests waiting for a connection in 1 round (up to 3 at once); "
        "pool of 6 (5 + 1 overflow), mean hold 4.4 s per request → at most 1.4 req/s per "
        "worker; served 1 req/s per worker"
    )
    assert finding.evidence["pool"] == {
        "worker_pid": 2001,
        "source": "pool",
        "pool_class": "QueuePool",
        "size": 5,
        "max_overflow": 1,
        "timeout": 30.0,
        "capacity": 6,
        "in_use_mean": 4.4,  # (1 + 3 + 6 + 6 + 6) / 5
        "hold_seconds": 4.4,  # Little's law: 4.4 in use / 1 req/s per worker (2 workers)
        "hold_basis": "request",
        "max_rps": 1.36,
        "served_rps": 1.0,
    }
    assert (finding.evidence["rounds_at_cap"], finding.evidence["waiting_max"]) == (3, 3)


def test_a_pool_read_in_the_worker_below_its_cap_is_no_finding() -> None:
    # GIVEN the real pool of 5 + 5 that a worker never filled, though it held 2 at once often
    figures = pools(2001, [2, 2, 2, 2, 1], max_overflow=5)
    counts = held({2001: [2, 2, 2, 2, 1]})
    found = fi.evaluate(evidence(held=counts, pools=figures))
    # THEN nothing: the inferred "cap of 2" of the seed gateway is not made up
    assert only(found, "pool-saturation") == []


def test_a_pool_without_a_cap_is_never_at_it() -> None:
    figures = pools(2001, [9, 9, 9], size=0, max_overflow=-1)
    assert only(fi.evaluate(evidence(pools=figures)), "pool-saturation") == []


def test_the_capacity_line_per_transaction_without_a_recorded_load() -> None:
    # GIVEN no load recorded and two transactions of 0.5 s and 1.5 s on a told pool of 4
    from profiler.analysis.findings.pool import pool_figures

    found = pool_figures(
        evidence(
            episodes=episodes(
                episode(1, start=0.0, end=0.5, max_idle_age=None),
                episode(2, start=1.0, end=2.5, max_idle_age=None),
            ),
            held=held({2001: [1, 1]}),
            pool_capacity=4,
        )
    )
    # THEN the ceiling is per transaction: 4 / 1 s
    assert [f.capacity_text() for f in found] == [
        "pool of 4 (told), mean hold 1 s per transaction → at most 4 transactions/s per worker"
    ]


@pytest.mark.parametrize(
    ("counts", "capacity", "fires"),
    [
        ([1, 1, 1, 1], None, False),  # an inferred cap of 1 means nothing
        ([3, 0, 0, 0, 0, 0], None, False),  # the max, seen once, is not a cap
        ([3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], None, False),  # 2 of 11 snapshots: under 20 %
        ([3, 3, 0, 0, 0, 0, 0, 0, 0, 0], None, True),  # 2 of 10: exactly 20 %
        ([3, 3, 3, 3], 15, False),  # the pool's capacity (15) was never reached
        ([1, 1, 0, 0], 1, True),  # a given capacity of 1 is a real cap
    ],
)
def test_pool_saturation_thresholds(counts: list[int], capacity: int | None, fires: bool) -> None:
    found = fi.evaluate(evidence(held=held({2001: counts}), pool_capacity=capacity))
    assert bool(only(found, "pool-saturation")) is fires


def test_pool_saturation_ignores_owners_unknown() -> None:
    assert fi.evaluate(evidence(held=held({None: [4, 4, 4]}))) == []


def test_pool_waits_are_recognised() -> None:
    assert fi.is_pool_wait(POOL_WAIT)
    assert fi.is_pool_wait("h (app.py:1);ConnectionPool.getconn (psycopg_pool/pool.py:180)")
    assert fi.is_pool_wait("h (app.py:1);acquire (asyncpg/pool.py:880)")
    assert not fi.is_pool_wait(QUERYING)
    assert not fi.is_pool_wait("h (app.py:1);getconn (mypool.py:3)")


# -- blocked-event-loop ----------------------------------------------------------------------

LOOP_POOL_WAIT = f"{UVICORN};{EVENT_LOOP};{POOL_WAIT}"
THREAD_POOL_WAIT = (
    "Thread._bootstrap (threading.py:1002);"
    f"WorkerThread.run (anyio/_backends/_asyncio.py:1124);{POOL_WAIT}"
)
LOOP_CHECKOUT = (  # a checkout that found a connection: in the pool's frames, not asleep
    f"{UVICORN};{EVENT_LOOP};list_tools (app.py:12);_do_get (sqlalchemy/pool/impl.py:167)"
)


def test_an_event_loop_asleep_in_a_checkout_is_critical() -> None:
    # GIVEN worker 2001's loop sampled once a second over 10 s, asleep in a checkout at
    # 2.5, 6.5 and 7.5 s while it held 4 (first 5 s) then 6 transactions; a thread of its
    # thread pool waiting too, a quick checkout, and worker 2002's single wait
    loop = {2.5: LOOP_POOL_WAIT, 4.5: LOOP_CHECKOUT, 6.5: LOOP_POOL_WAIT, 7.5: LOOP_POOL_WAIT}
    samples = stack_samples(
        *((i + 0.5, 2001, loop.get(i + 0.5, IDLE_LOOP)) for i in range(10)),
        (3.5, 2001, THREAD_POOL_WAIT),
        (6.5, 2002, LOOP_POOL_WAIT),
    )
    counts = held({2001: [4] * 5 + [6] * 5, 2002: [1] * 10})
    found = fi.evaluate(
        dataclasses.replace(evidence(held=counts, wait_samples=samples), session_end=10.0)
    )
    # THEN one finding, for 2001: 3 of its 10 loop samples (30 %, so about 3 of 10 s)
    finding = the(found, "blocked-event-loop")
    assert [row["worker_pid"] for row in finding.evidence.pop("workers")] == [2001]
    assert finding.severity == "critical"
    assert finding.title == (
        "worker 2001's event loop waited for a pool connection in 3 of 10 loop samples"
        " (30%, about 3 s of 10 s) while holding up to 6 transactions: list_tools → connection"
    )
    assert finding.evidence == {
        "worker_pid": 2001,
        "loop_samples": 10,
        "blocked_samples": 3,
        "blocked_share": 0.3,
        "blocked_seconds": 3.0,
        "held_max": 6,
        "held_mean": 5.333,  # (4 + 6 + 6) / 3
        "code_paths": [
            {
                "path": "list_tools (app.py:12) → connection (sqlalchemy/orm/session.py:2010)",
                "samples": 3,
            }
        ],
    }
    serialisable(found)


def test_a_rarely_blocked_loop_is_a_warning_and_once_is_nothing() -> None:
    # GIVEN 2 of 50 loop samples asleep in a checkout (4 %, under 5 %), no snapshot at all
    rare = stack_samples(
        *((i, 2001, LOOP_POOL_WAIT if i in (10, 30) else IDLE_LOOP) for i in range(50))
    )
    finding = the(fi.evaluate(evidence(wait_samples=rare)), "blocked-event-loop")
    assert finding.severity == "warning"
    assert finding.evidence["held_max"] is None
    assert "holding" not in finding.title
    # AND a single one is no finding
    once = stack_samples((1.0, 2001, LOOP_POOL_WAIT), (2.0, 2001, IDLE_LOOP))
    assert only(fi.evaluate(evidence(wait_samples=once)), "blocked-event-loop") == []


def test_blocked_samples_before_the_first_snapshot_count_no_transactions() -> None:
    # GIVEN snapshots from 20 s on (3 held), and blocked loop samples at 10 s and 30 s
    counts = held({2001: [3] * 20})
    counts["taken_at"] += 20.0
    samples = stack_samples((10.0, 2001, LOOP_POOL_WAIT), (30.0, 2001, LOOP_POOL_WAIT))
    finding = the(fi.evaluate(evidence(held=counts, wait_samples=samples)), "blocked-event-loop")
    # THEN only the sample at 30 s says what was held
    assert (finding.evidence["held_max"], finding.evidence["held_mean"]) == (3, 3.0)


@pytest.mark.parametrize(
    ("stack", "loop", "asleep"),
    [
        (LOOP_POOL_WAIT, True, True),
        (THREAD_POOL_WAIT, False, True),
        (LOOP_CHECKOUT, True, False),
        (IDLE_LOOP, True, False),
        (f"{LOOP_POOL_WAIT};pthread_cond_timedwait (libc.so.6)", True, True),  # --native
        (
            "run (uvloop/__init__.py:82);h (app.py:1);_do_get (sqlalchemy/pool/impl.py:167);"
            "Condition.wait (threading.py:331)",
            True,
            True,
        ),
        (
            "h (app.py:1);ConnectionPool.getconn (psycopg_pool/pool.py:180);"
            "Condition.wait (threading.py:331)",
            False,
            True,
        ),
        ("h (app.py:1);Condition.wait (threading.py:331)", False, False),  # not a pool's wait
    ],
)
def test_which_stacks_are_a_loop_and_asleep_in_a_checkout(
    stack: str, loop: bool, asleep: bool
) -> None:
    assert (fi.is_event_loop(stack), fi.is_blocked_on_pool(stack)) == (loop, asleep)


# -- memory ----------------------------------------------------------------------------------


def test_rss_growth_is_the_least_squares_slope() -> None:
    # GIVEN RSS rising 20 MiB a minute for a minute, with a dip in the middle
    points = [
        (0.0, 100 * MIB),
        (15.0, 105 * MIB),
        (30.0, 100 * MIB),
        (45.0, 115 * MIB),
        (60.0, 120 * MIB),
    ]
    finding = the(fi.evaluate(evidence(rss=rss(2001, points))), "rss-growth")
    # slope: sum(x*y)/sum(x^2) with x = -30..30: (-30*100 -15*105 + 15*115 + 30*120) MiB / 2250 s
    expected = (-3000 - 1575 + 1725 + 3600) / 2250 * 60 * MIB
    assert finding.evidence["bytes_per_minute"] == pytest.approx(expected, abs=1)
    assert finding.severity == "warning"
    assert (
        finding.title
        == "worker 2001 RSS grew 20.0 MiB/min over 60 s (100 MiB → 120 MiB, peak 120 MiB)"
    )
    assert (finding.evidence["start_bytes"], finding.evidence["peak_bytes"]) == (
        100 * MIB,
        120 * MIB,
    )
    assert finding.evidence["memory_limit_bytes"] is None


def test_rss_growth_needs_enough_history_and_a_steep_enough_slope() -> None:
    steep_but_short = rss(2001, [(0.0, 100 * MIB), (29.0, 200 * MIB)])
    long_but_flat = rss(2002, [(0.0, 100 * MIB), (60.0, 109 * MIB)])  # 9 MiB/min
    enough = rss(2003, [(0.0, 100 * MIB), (30.0, 106 * MIB)])  # 12 MiB/min over 30 s
    found = fi.evaluate(evidence(rss=pd.concat([steep_but_short, long_but_flat, enough])))
    assert [f.evidence["worker_pid"] for f in only(found, "rss-growth")] == [2003]


def test_rss_growth_near_the_memory_limit_is_critical_and_so_is_the_limit() -> None:
    # GIVEN RSS from 100 to 230 MiB over 60 s (as datetimes), limit 256 MiB: 90 %
    frame = rss(2001, [(0.0, 100 * MIB), (60.0, 230 * MIB)])
    frame["taken_at"] = pd.to_datetime(frame["taken_at"], unit="s", utc=True)
    found = fi.evaluate(evidence(rss=frame, memory_limits={2001: 256 * MIB}))
    assert [(f.rule, f.severity) for f in found] == [
        ("memory-limit", "critical"),
        ("rss-growth", "critical"),
    ]
    growth = the(found, "rss-growth")
    assert growth.title.endswith(", 90% of its 256 MiB memory limit")
    assert growth.evidence["limit_share"] == pytest.approx(230 / 256, abs=1e-4)
    limit = the(found, "memory-limit")
    assert limit.title == "worker 2001 peaked at 230 MiB RSS, 90% of its 256 MiB memory limit"
    assert limit.evidence["seconds_into_session"] == 60.0


@pytest.mark.parametrize(("peak_mib", "fires"), [(80, True), (79, False)])
def test_memory_limit_threshold(peak_mib: int, fires: bool) -> None:
    frame = rss(2001, [(0.0, peak_mib * MIB), (1.0, 10 * MIB)])
    found = fi.evaluate(evidence(rss=frame, memory_limits={2001: 100 * MIB, 9999: 1}))
    assert bool(only(found, "memory-limit")) is fires


# -- worker-vanished -------------------------------------------------------------------------


def test_an_oom_killed_worker_with_its_replacement() -> None:
    found = fi.evaluate(
        evidence(
            workers=workers(vanished(1234, 42.0, replacement=1301)),
            memory_limits={1234: 512 * MIB},
        )
    )
    finding = the(found, "worker-vanished")
    assert finding.severity == "critical"
    assert finding.title == (
        "worker 1234 vanished at +42 s (OOM-killed, cgroup memory.events oom_kill 1);"
        " replaced by 1301; last RSS 512 MiB"
    )
    assert finding.evidence == {
        "worker_pid": 1234,
        "time": 42.0,
        "seconds_into_session": 42.0,
        "exit": "oom-killed",
        "oom_evidence": "cgroup memory.events oom_kill 1",
        "replacement_pid": 1301,
        "last_rss_bytes": 512 * MIB,
        "memory_limit_bytes": 512 * MIB,
    }


def test_a_killed_worker_without_replacement_is_a_warning() -> None:
    events = workers(
        {
            "time": 1.0,
            "pid": 1234,
            "event": "appeared",
            "exit": None,
            "oom_evidence": None,
            "replacement_pid": None,
            "last_rss_bytes": None,
        },
        vanished(1234, 7.5, exit="killed", oom=None, replacement=None, last_rss=None),
        vanished(1235, 90.0, exit="mystery", oom=None, replacement=None, last_rss=None),
    )
    found = fi.evaluate(evidence(workers=events))
    assert [f.title for f in found] == [
        "worker 1234 vanished at +7.5 s (killed); not replaced",
        "worker 1235 vanished at +90 s (exit mystery); not replaced",
    ]
    assert {f.severity for f in found} == {"warning"}
    assert found[0].evidence["replacement_pid"] is None
    assert found[0].evidence["last_rss_bytes"] is None


# -- all together ----------------------------------------------------------------------------


def test_findings_come_most_important_first_and_serialise() -> None:
    # GIVEN one of everything
    frame = episodes(
        episode(1, max_idle_age=30.0, query="SELECT tools.*"),  # stuck, and 30x threshold
        episode(2, owner=None, max_idle_age=float("nan")),
        episode(3, max_idle_age=2.0, end=None),
    )
    everything = evidence(
        episodes=frame,
        hold_profile=Counter({CALLING_DOWNSTREAM: 40_000, QUERYING: 35_000, IDLE_LOOP: 25_000}),
        held=held({2001: [4, 4, 4, 1]}),
        rss=pd.concat(
            [
                rss(2001, [(0.0, 100 * MIB), (60.0, 200 * MIB)]),
                rss(2002, [(0.0, 90 * MIB), (60.0, 95 * MIB)]),
            ]
        ),
        memory_limits={2002: 100 * MIB},
        workers=workers(vanished(2003, 50.0, exit="exited", oom=None), vanished(2004, 60.0)),
    )
    # WHEN
    found = fi.evaluate(everything)
    # THEN critical first, by rule priority, then warnings
    assert [(f.severity, f.rule) for f in found] == [
        ("critical", "worker-vanished"),
        ("critical", "idle-in-transaction"),
        ("critical", "memory-limit"),
        ("warning", "worker-vanished"),
        ("warning", "held-code-path"),
        ("warning", "stuck-query"),
        ("warning", "rss-growth"),
        ("info", "pool-saturation"),  # an inferred cap, nothing waiting
    ]
    assert found[0].evidence["worker_pid"] == 2004
    serialisable(found)
    for finding in found:
        assert set(finding.to_json()) == {"rule", "severity", "title", "evidence"}
        assert finding.title and "nan" not in finding.title.lower()


def test_rules_read_what_held_episodes_gives() -> None:
    # GIVEN a real episode frame: backend 7 idle in transaction since 10.5, seen at 12 (1.5 s)
    # and 13 (2.5 s), gone at 14; backend 8 of a client no local process owns, still open
    activity = pd.DataFrame(
        [
            {
                "taken_at": t,
                "clock_offset": 0.0,
                "sampled_at": t,
                "pid": pid,
                "backend_start": 1.0,
                "xact_start": xs,
                "state_change": sc,
                "state": state,
                "query": "SELECT  1",
                "application_name": "gateway",
                "backend_type": "client backend",
                "owner_pid": owner,
                "owner_cmdline": "gunicorn: worker",
            }
            for t, pid, xs, sc, state, owner in [
                (12.0, 7, 10.0, 10.5, IDLE_TX, 2001),
                (13.0, 7, 10.0, 10.5, IDLE_TX, 2001),
                (14.0, 7, None, 13.5, "idle", 2001),
                (14.0, 8, 12.0, 12.5, IDLE_TX, None),
            ]
        ]
    )
    activity["owner_pid"] = activity["owner_pid"].astype("Int64")
    activity["xact_start"] = activity["xact_start"].astype("float64")
    activity["query"] = activity["query"].astype("category")
    frame = ep.held_episodes(activity, session_end=20.0)
    # WHEN
    found = fi.evaluate(evidence(episodes=frame, held=held_counts.connections_held(activity)))
    # THEN
    finding = the(found, "idle-in-transaction")
    assert finding.title == (
        "2 transactions idle in transaction over 1 s (p95 2.5 s, max 2.5 s) on 1 worker,"
        " 1 with owner unknown; 1 still open"
    )
    assert finding.evidence["by_query"] == [
        {"query": "SELECT 1", "episodes": 2, "max_idle_age": 2.5}
    ]
    serialisable(found)


def test_every_rule_has_a_report_heading_and_a_reference_entry() -> None:
    from profiler.report.page_text import RULE_HEADINGS

    assert set(RULE_HEADINGS) == set(fi.RULES)
    reference = Path(__file__).parents[1] / "docs" / "reference" / "findings.md"
    text = reference.read_text()
    assert [rule for rule in fi.RULES if f"**`{rule}`**" not in text] == []


def test_a_path_from_thread_dumps_says_it_is_the_workers_threads_meanwhile() -> None:
    found = fi.evaluate(
        evidence(
            episodes=episodes(episode(max_idle_age=30.0)),
            hold_profile=Counter({IDLE_LOOP: 300_000, QUERYING: 100_000}),
            hold_kinds={IDLE_LOOP: "threads", QUERYING: "threads"},
        )
    )
    finding = the(found, "held-code-path")
    assert finding.title.endswith(
        "; from py-spy thread dumps (no task sampler): the worker's threads meanwhile"
    )
    assert {p["attribution"] for p in finding.evidence["paths"]} == {"threads"}


def test_per_worker_findings_fold_into_one_with_a_row_per_worker() -> None:
    # GIVEN two workers at their told cap of 5: 2001 with threads waiting, 2002 without
    counts = held({2001: [5, 5, 5, 5, 5], 2002: [1, 5, 5, 1, 1]})
    waits = stack_samples((2.5, 2001, POOL_WAIT), (3.5, 2001, POOL_WAIT))
    found = fi.evaluate(
        dataclasses.replace(
            evidence(held=counts, wait_samples=waits, pool_capacity=5), session_end=5.0
        )
    )
    # THEN one pool-saturation finding, critical (the worst worker), naming both workers
    finding = the(found, "pool-saturation")
    assert finding.severity == "critical"
    assert finding.title.startswith(
        "workers 2001, 2002 (100%, 40% of the time at the pool's cap); the worst: worker 2001"
    ), finding.title
    # AND a row per worker, the worst first, each with its own severity and numbers
    rows = finding.evidence["workers"]
    assert [(r["worker_pid"], r["severity"], r["share_at_cap"]) for r in rows] == [
        (2001, "critical", 1.0),
        (2002, "warning", 0.4),
    ]
    assert finding.evidence["worker_pid"] == 2001
    serialisable(found)
