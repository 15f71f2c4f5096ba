"""Opening connections the way a sampler on a production database should.

Autocommit (a sampler must never itself sit idle in transaction), a recognisable
``application_name``, a short connect timeout, and every failure turned into a
``PostgresError`` whose message shows the DSN without its password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from profiler.errors import PostgresError, UsageError
from profiler.pg.dsn import redact

APPLICATION_NAME = "profiler"

# SQLSTATE class 28: invalid authorization; 42501: insufficient privilege.
_AUTH_STATES = ("28000", "28P01")


def connect(
    dsn: str, *, application_name: str = APPLICATION_NAME, connect_timeout: float = 5.0
) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection; ``PostgresError`` (exit 4) when the server fails us,
    ``UsageError`` (exit 2) when the DSN itself is malformed. Both name the DSN safely."""
    try:
        return psycopg.connect(
            dsn,
            autocommit=True,
            application_name=application_name,
            connect_timeout=max(1, round(connect_timeout)),
        )
    except psycopg.OperationalError as exc:
        raise _as_profiler_error(dsn, exc) from None
    except psycopg.ProgrammingError as exc:  # malformed conninfo: a bad value, not the server
        raise UsageError(
            f"invalid DSN {redact(dsn)}: {_first_line(exc)}",
            hint="use postgresql://user@host:port/dbname",
        ) from None


@contextmanager
def connection(dsn: str, **kwargs: float | str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    conn = connect(dsn, **kwargs)  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        conn.close()


def _as_profiler_error(dsn: str, exc: psycopg.OperationalError) -> PostgresError:
    reason = _first_line(exc)
    if exc.sqlstate in _AUTH_STATES or "authentication failed" in reason:
        return PostgresError(
            f"PostgreSQL refused the login for {redact(dsn)}: {reason}",
            hint="check the user and password in --dsn / PROFILER_DSN / DATABASE_URL",
        )
    return PostgresError(
        f"PostgreSQL unreachable at {redact(dsn)}: {reason}",
        hint="check that the server is running and the host/port in the DSN",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # libpq prefixes with 'connection failed: ' and may append hints on later lines.
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.removeprefix("connection failed: ")
