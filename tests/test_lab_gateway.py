"""The lab gateway, run for real: uvicorn in a thread, a real downstream process, PostgreSQL.

The point of the lab is one observable difference: while a tool invocation
awaits the downstream, a ``held`` gateway's connections sit ``idle in
transaction`` and a ``fresh`` one's don't. Those tests watch
``pg_stat_activity`` from a separate connection while a request is in flight;
the others pin down what both modes must share (same answers, same errors).
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg import sql

from profiler.lab import seed
from profiler.lab.downstream import command as downstream_command
from profiler.lab.gateway.app import create_app
from profiler.lab.gateway.db import APPLICATION_NAME
from profiler.lab.seed import create_and_seed
from profiler.lab.settings import API_TOKEN_COUNT, MODES, GatewaySettings, Mode, api_token
from tests.helpers import retry

HOST = "127.0.0.1"
AUTH = {"Authorization": f"Bearer {api_token(7)}"}
LISTS = ("/tools", "/servers", "/resources", "/prompts")
# The tests that never invoke a tool still need a downstream URL; nothing listens
# on the discard port, so a call that should not happen would fail loudly.
NO_DOWNSTREAM = f"http://{HOST}:9"

# Sampled from a separate autocommit connection: the gateway's backends by state,
# and how many have been idle in transaction for longer than a commit takes.
ACTIVITY = """
SELECT count(*) AS backends,
       count(*) FILTER (WHERE state = 'idle in transaction') AS idle_in_transaction,
       count(*) FILTER (WHERE state = 'idle in transaction'
                        AND clock_timestamp() - state_change > interval '100 milliseconds')
           AS held_open
FROM pg_stat_activity
WHERE application_name = %s AND datname = current_database()
"""


def _sqlalchemy_url(libpq_dsn: str) -> str:
    """The fixture hands out libpq URIs; the lab wants SQLAlchemy's psycopg 3 URL."""
    scheme, separator, rest = libpq_dsn.partition("://")
    assert separator and scheme in ("postgresql", "postgres"), "postgres_dsn must be a URI"
    return f"postgresql+psycopg://{rest}"


@pytest.fixture(scope="module")
def seeded(postgres_dsn: str) -> dict[str, int]:
    return create_and_seed(_sqlalchemy_url(postgres_dsn))


@pytest.fixture
def start_gateway(postgres_dsn: str, seeded: dict[str, int]) -> Iterator[Callable[..., str]]:
    """Start gateways in this process (uvicorn in a thread); all stop when the test ends."""
    with ExitStack() as stack:

        def start(
            mode: Mode,
            *,
            downstream_url: str = NO_DOWNSTREAM,
            pool_size: int = 5,
            max_overflow: int = 0,
            pool_timeout: float = 10.0,
        ) -> str:
            settings = GatewaySettings(
                dsn=_sqlalchemy_url(postgres_dsn),
                mode=mode,
                downstream_url=downstream_url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
            )
            return stack.enter_context(_serve(create_app(settings)))

        yield start


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """The real server on a socket we bound ourselves, so no other process can take the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"gateway-{port}", daemon=True
        )
        thread.start()
        try:
            retry(lambda: server.started or not thread.is_alive(), what="the gateway to start")
            assert server.started, "the gateway thread died while starting"
            yield f"http://{HOST}:{port}"
        finally:
            server.should_exit = True
            thread.join(15)


@pytest.fixture(scope="module")
def downstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[float], str]]:
    """Start ``python -m profiler.lab.downstream`` processes (one per latency) on loopback."""
    started: dict[float, str] = {}
    processes: list[subprocess.Popen[bytes]] = []
    log_dir = tmp_path_factory.mktemp("downstream")

    def start(latency: float) -> str:
        if latency in started:
            return started[latency]
        port = _free_port()
        log = log_dir / f"latency-{latency:g}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                downstream_command(HOST, port, latency),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).parent.parent,
            )
        processes.append(proc)
        url = f"http://{HOST}:{port}"
        retry(lambda: _healthy(url, proc, log), timeout=30, what=f"downstream at {url}")
        started[latency] = url
        return url

    try:
        yield start
    finally:
        for proc in processes:
            proc.terminate()  # by PID: Popen signals exactly the process it started
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"downstream exited with {proc.returncode}: {log.read_text()}")
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def _in_flight(url: str, path: str, **kwargs: Any) -> Iterator[Future[httpx.Response]]:
    """A POST sent from another thread, so the test can watch PostgreSQL while it runs."""
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=30) as client:
        yield pool.submit(client.post, path, headers=AUTH, **kwargs)


@contextmanager
def _watcher(postgres_dsn: str) -> Iterator[Callable[[], dict[str, int]]]:
    with psycopg.connect(
        postgres_dsn, autocommit=True, application_name="profiler-tests-watcher"
    ) as conn:

        def sample() -> dict[str, int]:
            row = conn.execute(ACTIVITY, (APPLICATION_NAME,)).fetchone()
            assert row is not None
            return {"backends": row[0], "idle_in_transaction": row[1], "held_open": row[2]}

        yield sample


# --- seed


@pytest.mark.postgres
def test_seed_fills_every_table_and_is_deterministic(postgres_dsn: str) -> None:
    # GIVEN
    url = _sqlalchemy_url(postgres_dsn)
    checksum = sql.SQL("SELECT md5(string_agg(t::text, '' ORDER BY id)) FROM {} t")
    # WHEN seeded twice with the same seed
    counts = create_and_seed(url)
    with psycopg.connect(postgres_dsn) as conn:
        first = {
            table: conn.execute(checksum.format(sql.Identifier("profiler_lab", table))).fetchone()
            for table in counts
        }
    again = create_and_seed(url)
    with psycopg.connect(postgres_dsn) as conn:
        second = {
            table: conn.execute(checksum.format(sql.Identifier("profiler_lab", table))).fetchone()
            for table in counts
        }
    # THEN
    assert counts == {
        "servers": seed.SERVER_COUNT,
        "tools": seed.SERVER_COUNT * seed.TOOLS_PER_SERVER,
        "resources": seed.SERVER_COUNT * seed.RESOURCES_PER_SERVER,
        "prompts": seed.SERVER_COUNT * seed.PROMPTS_PER_SERVER,
        "users": seed.USER_COUNT,
        "api_tokens": API_TOKEN_COUNT,
        "tool_invocations": seed.INVOCATION_HISTORY,
    }
    assert counts["tools"] == 2000
    assert again == counts
    assert first == second


# --- what both modes share


def test_health_needs_no_database() -> None:
    # GIVEN gateways whose database does not exist
    for mode in MODES:
        settings = GatewaySettings(
            dsn=f"postgresql+psycopg://nobody@{HOST}:9/none",
            mode=mode,
            downstream_url=NO_DOWNSTREAM,
        )
        with _serve(create_app(settings)) as url:
            # WHEN
            response = httpx.get(f"{url}/health")
        # THEN
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok", "mode": mode}


@pytest.mark.postgres
@pytest.mark.parametrize("path", LISTS)
def test_lists_answer_the_same_pages_in_both_modes(
    start_gateway: Callable[..., str], seeded: dict[str, int], path: str
) -> None:
    # GIVEN
    total = seeded[path.strip("/")]
    urls = {mode: start_gateway(mode) for mode in MODES}
    pages: dict[Mode, list[list[dict[str, Any]]]] = {}
    for mode, url in urls.items():
        with httpx.Client(base_url=url, headers=AUTH) as client:
            # WHEN
            responses = [
                client.get(path),
                client.get(path, params={"limit": 500}),
                client.get(path, params={"limit": 10, "offset": total - 4}),
            ]
            too_big = client.get(path, params={"limit": 501})
        # THEN
        assert [r.status_code for r in responses] == [200, 200, 200], responses[0].text
        assert too_big.status_code == 422
        pages[mode] = [r.json() for r in responses]
        default, largest, last = pages[mode]
        assert len(default) == 50
        assert len(largest) == min(500, total)
        assert [row["id"] for row in largest] == list(range(1, len(largest) + 1))
        assert len(last) == 4
    assert pages["held"] == pages["fresh"]


@pytest.mark.postgres
@pytest.mark.parametrize("mode", MODES)
def test_requests_without_a_valid_token_are_401(
    start_gateway: Callable[..., str], mode: Mode
) -> None:
    # GIVEN
    url = start_gateway(mode)
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer not-a-lab-token"},
        {"Authorization": f"Basic {api_token(0)}"},
    ]
    with httpx.Client(base_url=url) as client:
        # WHEN
        responses = [client.get("/tools", headers=headers) for headers in bad_headers]
    # THEN
    for response in responses:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.postgres
@pytest.mark.parametrize("mode", MODES)
def test_unknown_tool_is_404(start_gateway: Callable[..., str], mode: Mode) -> None:
    # GIVEN
    url = start_gateway(mode)
    with httpx.Client(base_url=url, headers=AUTH) as client:
        # WHEN
        shown = client.get("/tools/999999")
        invoked = client.post("/tools/999999/invoke", json={"arguments": {}})
        known = client.get("/tools/3")
    # THEN
    assert shown.status_code == 404, shown.text
    assert invoked.status_code == 404, invoked.text  # before any downstream call
    assert known.status_code == 200, known.text
    assert known.json()["id"] == 3
    assert len(known.json()["input_schema"]["properties"]) >= 3


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("mode", MODES)
def test_invoke_calls_the_downstream_and_records_the_invocation(
    start_gateway: Callable[..., str],
    downstream: Callable[[float], str],
    postgres_dsn: str,
    mode: Mode,
) -> None:
    # GIVEN
    url = start_gateway(mode, downstream_url=downstream(0.3))
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        # WHEN
        response = client.post("/tools/5/invoke", json={"arguments": {"query": mode}})
    # THEN
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tool"]["id"] == 5
    invocation = body["invocation"]
    assert invocation["status"] == "ok"
    assert invocation["duration_ms"] >= 300
    assert invocation["result"]["structuredContent"]["arguments"] == {"query": mode}
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute(
            "SELECT i.tool_id, i.status, i.user_id = t.user_id "
            "FROM profiler_lab.tool_invocations i "
            "JOIN profiler_lab.api_tokens t ON t.token = %s WHERE i.id = %s",
            (api_token(7), invocation["id"]),
        ).fetchone()
    assert row == (5, "ok", True)


# --- the incident and its fix


@pytest.mark.slow
@pytest.mark.postgres
def test_held_mode_sits_idle_in_transaction_during_the_downstream_call(
    start_gateway: Callable[..., str], downstream: Callable[[float], str], postgres_dsn: str
) -> None:
    # GIVEN a held gateway whose downstream takes a second
    url = start_gateway("held", downstream_url=downstream(1.0))
    with _watcher(postgres_dsn) as sample:
        # WHEN an invocation is in flight
        with _in_flight(url, "/tools/11/invoke", json={"arguments": {}}) as pending:
            # THEN the auth session and the handler's session both wait in a transaction
            def two_idle_in_transaction_in_flight() -> dict[str, int] | None:
                now = sample()
                return now if now["idle_in_transaction"] >= 2 and not pending.done() else None

            seen = retry(two_idle_in_transaction_in_flight, what="2 backends idle in transaction")
            response = pending.result()
        assert response.status_code == 200, response.text
        # ...and both are released once the response has been sent.
        retry(lambda: sample()["idle_in_transaction"] == 0, what="held sessions to close")
    assert seen["idle_in_transaction"] >= 2


@pytest.mark.slow
@pytest.mark.postgres
def test_fresh_mode_holds_no_transaction_during_the_downstream_call(
    start_gateway: Callable[..., str], downstream: Callable[[float], str], postgres_dsn: str
) -> None:
    # GIVEN a fresh gateway whose downstream takes a second
    url = start_gateway("fresh", downstream_url=downstream(1.0))
    samples: list[dict[str, int]] = []
    # WHEN an invocation is in flight, sampled for its whole life
    with (
        _watcher(postgres_dsn) as sample,
        _in_flight(url, "/tools/11/invoke", json={"arguments": {}}) as pending,
    ):
        while not pending.done():
            samples.append(sample())
            wait([pending], timeout=0.01)
        response = pending.result()
    # THEN no backend stayed in a transaction longer than a commit takes
    assert response.status_code == 200, response.text
    assert len(samples) >= 10, "the request ended before it could be watched"
    assert any(s["backends"] for s in samples), "never saw the gateway's pooled connection"
    assert [s for s in samples if s["held_open"]] == []
    quick = [s for s in samples if s["idle_in_transaction"]]
    assert len(quick) <= len(samples) // 10, quick  # between a statement and its COMMIT


@pytest.mark.postgres
def test_an_exhausted_pool_is_a_503_with_one_log_line(
    start_gateway: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a pool of one connection: held mode needs two per request (auth + handler)
    held = start_gateway("held", pool_size=1, max_overflow=0, pool_timeout=0.3)
    fresh = start_gateway("fresh", pool_size=1, max_overflow=0, pool_timeout=0.3)
    # WHEN
    with caplog.at_level("WARNING", logger="profiler.lab.gateway"):
        exhausted = httpx.get(f"{held}/tools", headers=AUTH)
        served = httpx.get(f"{fresh}/tools", headers=AUTH)
    # THEN held mode starves itself and says so; fresh mode, one session at a time, does not
    assert exhausted.status_code == 503, exhausted.text
    assert exhausted.json()["detail"].startswith("database connection pool exhausted")
    assert served.status_code == 200, served.text
    warnings = [r for r in caplog.records if r.name.startswith("profiler.lab.gateway")]
    assert len(warnings) == 1, caplog.text
    assert "GET /tools" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # one line, no traceback
