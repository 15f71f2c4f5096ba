"""The same database through PostgreSQL's Unix socket, for ``lab up --unix-socket``.

A local PostgreSQL is most often reached through its socket (libpq's default
when no host is given), and a backend's client is then a Unix socket, not a
TCP port: the lab reproduces that topology. The socket folder comes from the
server itself (``unix_socket_directories``), so a ``--dsn`` over TCP to this
host is enough to find it; a server on another host has no socket here.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from psycopg.conninfo import conninfo_to_dict

from profiler.errors import UsageError
from profiler.pg.connect import connection
from profiler.pg.dsn import redact
from profiler.pg.queries import load

LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})


def socket_file(directory: str, port: int) -> Path:
    """libpq's name for the socket of the server on ``port`` in ``directory``."""
    return Path(directory) / f".s.PGSQL.{port}"


def socket_dsn(dsn: str) -> str:
    """``dsn`` (a libpq URI) rewritten to reach the same server and database through its
    Unix socket: ``postgresql://user@/db?host=/socket/dir&port=N``.

    A DSN whose host is already a folder is returned as it is. A server that is
    not on this host, or has no socket file we can see, is a :class:`UsageError`.
    """
    if require_local(dsn):
        return dsn
    with connection(dsn) as conn:
        row = conn.execute(load("unix_socket", conn.info.server_version)).fetchone()
    assert row is not None  # SELECT without FROM: always one row
    directories, port = str(row[0]), int(str(row[1]))
    candidates = [d.strip() for d in directories.split(",") if d.strip()]
    for directory in candidates:
        if not directory.startswith("@") and socket_file(directory, port).exists():
            return with_socket(dsn, directory, port)
    raise UsageError(
        f"PostgreSQL at {redact(dsn)} has no Unix socket file here "
        f"(unix_socket_directories = {directories!r}, port {port})",
        hint="set unix_socket_directories in postgresql.conf, or drop --unix-socket",
    )


def require_local(dsn: str) -> bool:
    """Check, before anything starts, that ``dsn`` names a server on this host; True when
    it already names a socket folder. Another host is a :class:`UsageError` (exit 2)."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError: a DSN libpq cannot parse
        raise UsageError(f"--dsn is not a valid DSN: {redact(str(exc))}") from None
    host = str(params.get("host") or "")
    if host.startswith("/"):
        return True
    if host not in LOCAL_HOSTS:
        raise UsageError(
            f"--unix-socket needs PostgreSQL on this host, and {redact(dsn)} names {host!r}",
            hint="pass a --dsn to a local server (127.0.0.1 or host=/socket/dir), "
            "or drop --unix-socket",
        )
    return False


def with_socket(dsn: str, directory: str, port: int) -> str:
    """The URI ``dsn`` with its host replaced by the socket ``directory`` (user, password,
    database and other parameters kept).

    >>> with_socket("postgresql://app:pw@127.0.0.1:5432/app?sslmode=disable", "/run/pg", 5432)
    'postgresql://app:pw@/app?host=/run/pg&port=5432'
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise UsageError(
            "--unix-socket needs a URI-form DSN (postgresql://user@host:port/dbname)",
            hint=f"rewrite {redact(dsn)!r} as a postgresql:// URI",
        )
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("host", "hostaddr", "port", "sslmode")
    ]
    query = [("host", unquote(directory)), ("port", str(port)), *query]
    return f"postgresql://{userinfo}{parts.path and quote(unquote(parts.path))}?" + urlencode(
        query, safe="/"
    )
