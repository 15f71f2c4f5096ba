"""The harness itself: sessions held open really show up in pg_stat_activity."""

from __future__ import annotations

import psycopg
import pytest


@pytest.mark.postgres
@pytest.mark.parametrize("state", ["idle in transaction", "active"])
def test_open_sessions_produces_backends_in_the_asked_state(
    open_sessions, postgres_dsn, state
) -> None:
    # WHEN
    held = open_sessions(3, state)
    # THEN
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, state, xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = ANY(%s)",
            ([h.backend_pid for h in held],),
        ).fetchall()
    assert sorted(rows) == sorted((h.backend_pid, state, True) for h in held)


@pytest.mark.postgres
def test_embedded_or_external_server_listens_on_tcp(postgres_dsn) -> None:
    # Ownership mapping needs TCP clients with ports, so the test server must give them.
    with psycopg.connect(postgres_dsn) as conn:
        addr, port = conn.execute(
            "SELECT client_addr, client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert addr is not None and port > 0
