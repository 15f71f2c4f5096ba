"""What the connected role may see: the difference between real query texts and
``<insufficient privilege>`` in every other session's row."""

from __future__ import annotations

import psycopg
from psycopg.rows import class_row

from profiler.model import RolePrivileges
from profiler.pg import queries


def role_privileges(conn: psycopg.Connection[tuple[object, ...]]) -> RolePrivileges:
    sql = queries.load("role_privileges", conn.info.server_version)
    with conn.cursor(row_factory=class_row(RolePrivileges)) as cur:
        row = cur.execute(sql, prepare=False).fetchone()
    if row is None:  # the role was dropped under us; report it as unprivileged
        raise psycopg.OperationalError("current role not found in pg_roles")
    return row
