"""The Diagnosis on hand-built samples: each cause from the evidence that should make it,
and nothing from a healthy session.

Task rows are built as :func:`profiler.capture.task_log.read` gives them (``openers``:
``(backend, function, file, line, via)``); held time per transaction as
:class:`~profiler.analysis.attribution.TaskAttribution` gives it (``per_episode``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pytest

from profiler.analysis.diagnosis import Cause, DiagnosisInput, diagnose
from profiler.analysis.findings import Finding
from profiler.analysis.findings.pool import PoolFigures
from profiler.analysis.hold_classes import classify
from profiler.analysis.requests import connections_per_request

INVOKE = "endpoint POST /tools/{tool_id}/invoke (invoke_tool)"
APP = "app (fastapi/routing.py:528);run_endpoint_function (fastapi/routing.py:300)"
AWAITING = (
    f"{INVOKE};{APP};invoke_tool (app/handlers.py:113);call_tool (app/tools.py:51);"
    "AsyncClient.post (httpx/_client.py:1859);AsyncClient.send (httpx/_client.py:1629)"
)
QUERYING = (
    f"{INVOKE};{APP};invoke_tool (app/handlers.py:110);Session.get (sqlalchemy/orm/session.py:3934)"
)
SERIALISING = (
    "endpoint GET /tools (list_tools);app (fastapi/routing.py:528);"
    "serialize_response (fastapi/routing.py:347);run_in_threadpool (starlette/concurrency.py:34)"
)
MIDDLEWARE = (
    f"{INVOKE};BaseHTTPMiddleware.__call__ (starlette/middleware/base.py:180);"
    "AuditMiddleware.dispatch (app/middleware.py:20);"
    "BaseHTTPMiddleware.__call__.<locals>.call_next (starlette/middleware/base.py:160);"
    "MemoryObjectReceiveStream.receive (anyio/streams/memory.py:111)"
)
STREAMING = (
    "endpoint GET /servers (list_servers);StreamingResponse.__call__ (starlette/responses.py:270);"
    "StreamingResponse.stream_response (starlette/responses.py:250);body (app/stream.py:30);"
    "sleep (asyncio/tasks.py:649)"
)


def per_episode(*rows: tuple[str, float]) -> pd.DataFrame:
    """Held time by stack: one transaction per row, attributed to its task."""
    return pd.DataFrame(
        {
            "episode_id": list(range(len(rows))),
            "stack": [stack for stack, _ in rows],
            "kind": ["task"] * len(rows),
            "millis": [seconds * 1000 for _, seconds in rows],
        }
    )


def task_rows(*rows: dict[str, Any]) -> pd.DataFrame:
    base = {"worker_pid": 101, "task_id": 1, "request": -1, "backends": (), "openers": ()}
    if not rows:
        return pd.DataFrame(columns=[*base, "taken_at", "endpoint", "stack"])
    filled = [{**base, **row} for row in rows]
    frame = pd.DataFrame(filled)
    frame["taken_at"] = pd.to_datetime(
        [datetime.fromtimestamp(row["at"], timezone.utc) for row in filled]
    )
    for column in ("backends", "openers"):
        frame[column] = pd.Series([row[column] for row in filled], dtype=object)
    return frame.drop(columns="at")


def finding(rule: str, severity: str = "critical", **evidence: Any) -> Finding:
    return Finding(rule, severity, f"{rule} title", evidence, 1.0)


IDLE = finding(
    "idle-in-transaction",
    episodes=12,
    threshold_seconds=1.0,
    max_idle_age=2.2,
)
POOL = finding("pool-saturation", cap=6, inferred=False, share_at_cap=0.8, workers=[])
HELD = finding("held-code-path")


def pool(pid: int, capacity: int | None = 6, source: str = "pool") -> PoolFigures:
    return PoolFigures(
        pid, source, "QueuePool", 6, 0, 30.0, capacity, 5.5, 3.0, "request", 2.0, 1.1
    )


def two_connection_tasks(rounds: int = 4) -> pd.DataFrame:
    """A request task per round holding 8001 (get_db, used by the handler) and 8002 (the
    auth dependency's session, opened by get_auth_db)."""
    openers = (
        (8002, "get_auth_db", "app/deps.py", 54, "dependency"),
        (8002, "contextmanager_in_threadpool", "fastapi/concurrency.py", 24, "dependency"),
        (8002, "authenticate", "app/deps.py", 63, "dependency"),
        (8001, "get_db", "app/deps.py", 46, "dependency"),
        (8001, "invoke_tool", "app/handlers.py", 108, "frame"),
    )
    return task_rows(
        *(
            {
                "at": float(i),
                "endpoint": INVOKE,
                "stack": AWAITING,
                "backends": (8001,),
                "openers": openers,
                "request": 77,
            }
            for i in range(rounds)
        )
    )


def given(**parts: Any) -> DiagnosisInput:
    defaults: dict[str, Any] = {
        "findings": [],
        "per_episode": None,
        "tasks": task_rows(),
        "pools": [pool(101), pool(102)],
        "served_rps": 2.2,
        "load_errors": 218,
    }
    return DiagnosisInput(**{**defaults, **parts})


def test_held_across_the_downstream_call_is_the_first_cause_with_file_and_line() -> None:
    # GIVEN requests holding connections mostly across call_tool's HTTP call, some querying,
    # transactions idle in transaction and pools at their cap
    found = diagnose(
        given(
            findings=[HELD, IDLE, POOL],
            per_episode=per_episode((AWAITING, 7.4), (QUERYING, 1.0)),
            tasks=two_connection_tasks(),
        )
    )
    # THEN the first cause is the hold across the await, in the handler, with its slow call
    first = found[0]
    assert first.cause == "session-held-across-await"
    assert first.title == (
        "sessions held across the downstream call `call_tool → AsyncClient.post` in "
        "`invoke_tool` (app/handlers.py:113)"
    )
    assert [(w.role, w.function, w.file, w.line) for w in first.where] == [
        ("handler", "invoke_tool", "app/handlers.py", 113),
        ("slow call", "call_tool → AsyncClient.post", "app/tools.py", 51),
        ("dependency", "get_auth_db", "app/deps.py", 54),
        ("dependency", "get_db", "app/deps.py", 46),
    ]
    # AND the mechanism is the chain, each step with the session's figures
    assert first.mechanism[0].endswith(
        "7.4 s of 8.4 s connection-seconds held by requests (88%)"
    ), first.mechanism
    assert first.mechanism[1:] == [
        "12 transactions idle in transaction over 1 s (max 2.2 s)",
        "pool at its cap of 6 on 1 of 2 workers (up to 80% of the time)",
        "throughput 2.2 req/s, 218 errors (the pools allow at most 4 req/s at this hold time)",
    ]
    assert first.evidence == ["held-code-path", "idle-in-transaction", "pool-saturation"]
    assert (first.severity, first.fix_link) == ("critical", "how-to/fix-with-short-sessions.md")


def test_two_connections_per_request_names_both_holders_and_what_the_pool_serves() -> None:
    found = diagnose(
        given(
            findings=[POOL],
            per_episode=per_episode((f"{INVOKE};{APP};run_in_threadpool (x/y.py:1)", 3.0)),
            tasks=two_connection_tasks(),
        )
    )
    # THEN (no hold class to blame) the two connections come first
    (cause,) = found
    assert cause.cause == "two-connections-per-request"
    assert cause.title == (
        "each request to POST /tools/{tool_id}/invoke takes 2 connections (dependency "
        "`authenticate` (its session from `get_auth_db`) + handler `get_db`): a pool of 6 "
        "serves at most 3 requests at once"
    )
    assert [(w.function, w.line, w.role) for w in cause.where] == [
        ("get_auth_db", 54, "dependency"),
        ("get_db", 46, "dependency"),
    ]
    assert cause.mechanism[0] == (
        "4 of 4 sampled rounds of POST /tools/{tool_id}/invoke requests held 2 connections "
        "or more at once (up to 2)"
    )


def test_a_middleware_holding_across_call_next_is_named_as_the_holder() -> None:
    # GIVEN the middleware's task holds 8003 (its own session, a frame local of dispatch)
    # while the handler, in another task of the same request, holds 8004
    tasks = task_rows(
        *(
            row
            for i in range(3)
            for row in (
                {
                    "at": float(i),
                    "task_id": 1,
                    "request": 55,
                    "endpoint": INVOKE,
                    "stack": MIDDLEWARE,
                    "backends": (8003,),
                    "openers": (
                        (8003, "AuditMiddleware.dispatch", "app/middleware.py", 14, "frame"),
                    ),
                },
                {
                    "at": float(i),
                    "task_id": 2,
                    "request": 55,
                    "endpoint": INVOKE,
                    "stack": AWAITING,
                    "backends": (8004,),
                    "openers": ((8004, "get_db", "app/deps.py", 46, "dependency"),),
                },
            )
        )
    )
    requests = connections_per_request(tasks)
    assert [h.label() for h in requests[0].all_holders] == [
        "middleware `AuditMiddleware.dispatch`",
        "dependency `get_db`",
    ]
    assert (requests[0].rounds, requests[0].multi_rounds) == (3, 3)
    found = diagnose(
        given(findings=[IDLE, POOL], per_episode=per_episode((MIDDLEWARE, 9.0)), tasks=tasks)
    )
    # THEN the middleware comes first, named where, then the two connections of the request
    assert [c.cause for c in found] == [
        "middleware-session-across-call-next",
        "two-connections-per-request",
    ]
    assert found[0].where[0].role == "middleware"
    assert found[0].where[0].function == "AuditMiddleware.dispatch"
    assert found[0].title.startswith("a middleware's session held across `call_next`")


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        (AWAITING, "await"),
        (QUERYING, "database"),
        (SERIALISING, "serialisation"),
        (MIDDLEWARE, "middleware"),
        (STREAMING, "streaming"),
        (f"{INVOKE};{APP};run_in_threadpool (starlette/concurrency.py:34)", "other"),
    ],
)
def test_held_stacks_are_classified_by_what_the_request_was_doing(
    stack: str, expected: str
) -> None:
    assert classify(stack) == expected


@pytest.mark.parametrize(
    ("stack", "cause"),
    [
        (SERIALISING, "held-across-serialisation"),
        (STREAMING, "streaming-holds-session"),
    ],
)
def test_serialisation_and_streaming_holds_are_their_own_causes(stack: str, cause: str) -> None:
    found = diagnose(given(findings=[IDLE], per_episode=per_episode((stack, 5.0))))
    assert [c.cause for c in found] == [cause]


def test_no_harm_no_cause_whatever_the_stacks() -> None:
    # GIVEN held time across an await but no transaction idle beyond the threshold and no
    # pool at a known cap (an inferred one is no evidence)
    inferred = finding("pool-saturation", "info", inferred=True, cap=None)
    found = diagnose(given(findings=[inferred], per_episode=per_episode((AWAITING, 9.0)), pools=[]))
    assert found == []


def test_a_loop_blocked_in_pool_checkouts_is_sync_db_in_async() -> None:
    blocked = finding(
        "blocked-event-loop",
        blocked_share=0.3,
        code_paths=[
            {"path": "list_tools (app/handlers.py:86) → Session.get (sqlalchemy/orm/session.py:1)"}
        ],
        workers=[],
    )
    (cause,) = diagnose(given(findings=[blocked]))
    assert cause.cause == "sync-db-in-async"
    assert [(w.function, w.role) for w in cause.where] == [
        ("list_tools", "handler"),
        ("Session.get", "slow call"),
    ]
    assert cause.evidence == ["blocked-event-loop"]


def test_a_loop_idle_in_queries_is_sync_db_in_async() -> None:
    loop = "run (uvicorn/server.py:63);BaseEventLoop._run_once (asyncio/base_events.py:1922)"
    query = f"{loop};list_tools (app/handlers.py:86);execute (psycopg/cursor.py:97)"
    select = f"{loop};select (selectors.py:468)"
    samples = pd.DataFrame(
        {
            "worker_pid": [101] * 10,
            "taken_at": pd.to_datetime(
                [datetime.fromtimestamp(i, timezone.utc) for i in range(10)]
            ),
            "stack": [query] * 4 + [select] * 6,
            "active": [False] * 10,
        }
    )
    (cause,) = diagnose(given(wait_samples=samples))
    assert cause.cause == "sync-db-in-async"
    assert "40% of loop samples waiting on a query" in cause.title
    assert cause.where[0].function == "list_tools"
    # AND a loop that queried in 2 of 10 samples is a healthy one
    fewer = samples.assign(stack=[query] * 2 + [select] * 8)
    assert diagnose(given(wait_samples=fewer)) == []


def test_a_cause_is_json_in_the_documented_shape() -> None:
    found = diagnose(given(findings=[HELD, IDLE, POOL], per_episode=per_episode((AWAITING, 5.0))))
    shape = json.loads(json.dumps(found[0].to_json()))
    assert sorted(shape) == sorted(
        ["cause", "title", "mechanism", "where", "fix", "fix_link", "evidence", "severity"]
    )
    assert sorted(shape["where"][0]) == ["file", "function", "line", "role"]
    assert isinstance(found[0], Cause)


def test_with_the_source_a_cause_quotes_what_lint_flags_in_its_handler() -> None:
    from pathlib import Path

    from profiler.lint import lint_path
    from profiler.report.diagnosis_source import join_lint

    held = AWAITING.replace("app/handlers.py:113", "profiler/lab/gateway/held.py:113")
    found = diagnose(given(findings=[HELD, IDLE, POOL], per_episode=per_episode((held, 5.0))))
    gateway = Path(__file__).resolve().parents[1] / "profiler" / "lab" / "gateway"
    (joined, *_) = join_lint(found, lint_path(gateway))
    quoted = [step for step in joined.mechanism if step.startswith("`profiler lint`")]
    assert quoted and "held.py:" in quoted[0] and "invoke_tool" in quoted[0], joined.mechanism
    # AND a cause about code lint does not flag is left as it was
    assert join_lint(found, lint_path(gateway / "fresh.py")) == found
