"""Reading ``pg_stat_activity``."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row

from profiler.pg import queries


@dataclass(frozen=True, slots=True)
class StateCount:
    state: str
    backends: int
    oldest_seconds: float


def state_counts(
    conn: psycopg.Connection[tuple[object, ...]], application_name: str
) -> list[StateCount]:
    """Backends of one application per state. Autocommit: activity data is frozen
    for the length of a transaction, so each call must be its own statement."""
    sql = queries.load("state_counts", conn.info.server_version)
    with conn.cursor(row_factory=class_row(StateCount)) as cur:
        return cur.execute(sql, {"application_name": application_name}, prepare=True).fetchall()
