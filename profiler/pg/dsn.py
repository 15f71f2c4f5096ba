"""Where a DSN comes from, what shape it may take, and how it is shown.

Users paste their gateway's setting, which is often a SQLAlchemy URL
(``postgresql+asyncpg://...``); libpq does not read those, so the driver part
is dropped here. A password must never reach any output, so everything that
shows a DSN goes through :func:`redact`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from profiler.errors import UsageError

ENV_VARS = ("PROFILER_DSN", "DATABASE_URL")

_SCHEME = re.compile(r"^(postgres(?:ql)?)(\+[a-z0-9_]+)?://", re.IGNORECASE)
# asyncpg spells libpq's sslmode as ssl=...; everything else libpq understands.
_QUERY_RENAMES = {"ssl": "sslmode"}
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def resolve(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The DSN from ``--dsn``, else ``PROFILER_DSN``, else ``DATABASE_URL``; libpq form."""
    env = os.environ if environ is None else environ
    raw = option or next((env[name] for name in ENV_VARS if env.get(name)), None)
    return to_libpq(raw) if raw else None


def to_libpq(dsn: str) -> str:
    """Accept libpq URIs, ``key=value`` strings and SQLAlchemy URLs; return what libpq reads.

    >>> to_libpq("postgresql+psycopg://app:s3cret@db:5432/app")
    'postgresql://app:s3cret@db:5432/app'
    >>> to_libpq("postgresql+asyncpg://app@db/app?ssl=require")
    'postgresql://app@db/app?sslmode=require'
    >>> to_libpq("host=db dbname=app")
    'host=db dbname=app'
    """
    dsn = dsn.strip()
    match = _SCHEME.match(dsn)
    if not match:
        if "://" in dsn:
            scheme = dsn.split("://", 1)[0]
            raise UsageError(
                f"not a PostgreSQL DSN (scheme {scheme!r})",
                hint="use postgresql://user@host:port/dbname (SQLAlchemy URLs are accepted)",
            )
        return dsn
    parts = urlsplit("postgresql://" + dsn[match.end() :])
    query = [
        (_QUERY_RENAMES.get(k, k), v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``: safe for output, files and logs.

    >>> redact("postgresql://app:s3cret@db:5432/app?sslmode=require")
    'postgresql://app:***@db:5432/app?sslmode=require'
    >>> redact("host=db password='a b' user=app")
    'host=db password=*** user=app'
    >>> redact("postgresql://db/app?password=x&user=app")
    'postgresql://db/app?password=***&user=app'
    """
    if not _SCHEME.match(dsn.strip()):
        return _KV_PASSWORD.sub(r"\1***", dsn)
    parts = urlsplit(dsn.strip())
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = [
        (k, "***" if k.lower() == "password" else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/*")))


def build(*, host: str, port: int, user: str, dbname: str, password: str | None = None) -> str:
    """A libpq URI from parts, quoting what needs it."""
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"


def to_sqlalchemy(dsn: str) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) for a libpq URI."""
    libpq = to_libpq(dsn)
    if not libpq.startswith("postgresql://"):
        raise UsageError(
            "the lab needs a URI-form DSN (postgresql://user@host:port/dbname)",
            hint=f"rewrite {redact(dsn)!r} as a postgresql:// URI",
        )
    return "postgresql+psycopg://" + libpq[len("postgresql://") :]


def database_name(dsn: str) -> str | None:
    """The database a URI names, for messages; None for key=value strings."""
    if not _SCHEME.match(dsn):
        return None
    path = urlsplit(dsn).path.lstrip("/")
    return unquote(path) or None
