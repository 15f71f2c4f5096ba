"""PgBouncer's admin console: who each server connection serves, to see through the pooler.

The console is the virtual database ``pgbouncer`` of any PgBouncer. It speaks
only the simple query protocol and has no transactions, so the connection is
autocommit, never prepares (``prepare_threshold=None``) and uses psycopg's
``ClientCursor``, which sends each statement as one simple query. Column sets
grow across PgBouncer versions: rows are read by column name.

:class:`PoolerLens` is what the sampler calls per snapshot: it finds the
console (``--pgbouncer``, ``PROFILER_PGBOUNCER``, or the config file of a
PgBouncer running on this host), reads ``SHOW SERVERS`` and ``SHOW CLIENTS``,
and hands them to :class:`~profiler.targets.pooler.SeeThrough`. Where the
console cannot be read it warns once and leaves the pooler as the owner.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from profiler.errors import PostgresError, UsageError
from profiler.model import Owner
from profiler.pg.connect import APPLICATION_NAME
from profiler.pg.dsn import redact, to_libpq
from profiler.targets.backend_clients import ClientSide
from profiler.targets.pgbouncer_config import ConfigUnreadable, ConsoleAddress, read_console
from profiler.targets.pooler import PoolerConnection, PoolerState, SeeThrough

ENV_VAR = "PROFILER_PGBOUNCER"
CONSOLE_DATABASE = "pgbouncer"
CONNECT_TIMEOUT = 3
RETRY_SECONDS = 30.0  # after a lost console, how long before trying again
# Kinds of owner a pooler's server connection can have: what /proc made of it.
_SEE_THROUGH = ("pooler", "unix-socket", "remote")
_HINT = (
    "pass --pgbouncer postgresql://USER@HOST:PORT/pgbouncer (or set PROFILER_PGBOUNCER) "
    "with a role listed in its admin_users or stats_users"
)

Warn = Callable[[str], None]


def resolve(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The console DSN from ``--pgbouncer``, else ``PROFILER_PGBOUNCER``; validated.

    An unparseable value is a usage error (exit 2), before anything starts.
    """
    env = os.environ if environ is None else environ
    raw = option or env.get(ENV_VAR) or None
    return None if raw is None else console_dsn(raw)


def console_dsn(value: str) -> str:
    """A libpq DSN for the admin console: ``dbname`` defaults to ``pgbouncer``.

    >>> console_dsn("postgresql://stats@127.0.0.1:6432")
    'user=stats host=127.0.0.1 port=6432 dbname=pgbouncer'
    >>> console_dsn("host=/run/pgbouncer port=6432")
    'host=/run/pgbouncer port=6432 dbname=pgbouncer'
    >>> console_dsn("postgresql://app@db:6432/app")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    profiler.errors.UsageError: --pgbouncer names database 'app', not the admin console ...
    """
    try:
        params = conninfo_to_dict(to_libpq(value))
    except psycopg.ProgrammingError as exc:
        raise UsageError(
            f"invalid --pgbouncer value {redact(value)}: {str(exc).strip().splitlines()[0]}",
            hint="use postgresql://USER@HOST:PORT/pgbouncer",
        ) from None
    dbname = params.get("dbname") or CONSOLE_DATABASE
    if dbname != CONSOLE_DATABASE:
        raise UsageError(
            f"--pgbouncer names database {dbname!r}, not the admin console 'pgbouncer'",
            hint="use postgresql://USER@HOST:PORT/pgbouncer",
        )
    params["dbname"] = CONSOLE_DATABASE
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


# PoolerConnection's fields, in order: the console's column names.
_FIELDS = tuple(PoolerConnection.__dataclass_fields__)
# What the join reads of each (SeeThrough): a value per row is decoded only for these.
_SERVER_FIELDS = ("addr", "local_addr", "local_port", "link", "remote_pid")
_CLIENT_FIELDS = ("addr", "port", "local_addr", "local_port", "connect_time", "ptr")


class AdminConsole:
    """One connection to a PgBouncer admin console; each ``SHOW`` read into typed rows."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        try:
            self._conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                prepare_threshold=None,
                cursor_factory=psycopg.ClientCursor,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=APPLICATION_NAME,
            )
        except psycopg.Error as exc:
            raise PostgresError(
                f"PgBouncer admin console unreachable at {redact(self.dsn)}: {_first_line(exc)}",
                hint=_HINT,
            ) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> AdminConsole:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` as dicts by column name (``what`` is one of our constants)."""
        if self._conn is None:
            self.open()
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute(f"SHOW {what}")  # the console knows no parameters; names are ours
            names = [column.name for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def servers(self, fields: Sequence[str] = _SERVER_FIELDS) -> tuple[PoolerConnection, ...]:
        return self._connections(b"SHOW SERVERS", fields)

    def clients(self, fields: Sequence[str] = _CLIENT_FIELDS) -> tuple[PoolerConnection, ...]:
        return self._connections(b"SHOW CLIENTS", fields)

    def _connections(self, query: bytes, fields: Sequence[str]) -> tuple[PoolerConnection, ...]:
        """SHOW SERVERS/CLIENTS straight from libpq, only the columns we use, by name;
        the others read as empty (pass ``_FIELDS`` for all of them).

        This runs every snapshot with hundreds of rows: psycopg's row machinery
        (a Python object per value of all 18 columns) cost several times our
        budget, while libpq hands out just the values asked for.
        """
        if self._conn is None:
            self.open()
        assert self._conn is not None
        result = self._conn.pgconn.exec_(query)
        if result.status != pq.ExecStatus.TUPLES_OK:
            message = result.error_message.decode("utf-8", "replace").strip()
            raise psycopg.OperationalError(message or f"{query.decode()} failed")
        names = [(result.fname(i) or b"").decode() for i in range(result.nfields)]
        where = [names.index(name) if name in names and name in fields else -1 for name in _FIELDS]
        value = result.get_value
        rows = []
        for row in range(result.ntuples):
            texts = ["" if column < 0 else (value(row, column) or b"").decode() for column in where]
            rows.append(
                PoolerConnection(
                    texts[0],
                    texts[1],
                    texts[2],
                    texts[3],
                    _int(texts[4]),
                    texts[5],
                    _int(texts[6]),
                    texts[7],
                    texts[8],
                    texts[9],
                    _int(texts[10]),
                    texts[11],
                )
            )
        return tuple(rows)

    def config(self) -> dict[str, str]:
        return {str(row["key"]): str(row["value"]) for row in self.show("CONFIG")}

    def version(self) -> str:
        rows = self.show("VERSION")
        return str(next(iter(rows[0].values()))) if rows else ""

    def state(self, name: str = "pgbouncer") -> PoolerState:
        return PoolerState(name=name, servers=self.servers(), clients=self.clients())


def _int(value: str) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.removeprefix("connection failed: ")


class PoolerLens:
    """Per snapshot, sees through a pooler on the way to PostgreSQL, or says once why not.

    ``explicit`` is the ``--pgbouncer`` DSN; without it the console is looked
    for only once a backend is found owned by a PgBouncer on this host, and
    reached with the role (and password) of ``dsn``, the sampler's own DSN.
    """

    def __init__(self, dsn: str, explicit: str | None = None, *, warn: Warn) -> None:
        self.dsn = dsn
        self.explicit = explicit
        self._warn = warn
        self._console: AdminConsole | None = None
        self._console_pid: int | None = None
        self._see = SeeThrough()
        self._warned: set[str] = set()
        self._retry_at = 0.0
        self.reads = 0
        self.last_read_seconds = 0.0

    @property
    def see_through(self) -> SeeThrough:
        return self._see

    def close(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    def apply(
        self, backends: Sequence[ClientSide], owners: Mapping[int, Owner]
    ) -> dict[int, Owner]:
        """``owners`` with the pooler replaced by the worker wherever the console tells."""
        poolers = {o.pid: o for o in owners.values() if o.kind == "pooler" and o.pid is not None}
        candidates = any(o.kind in _SEE_THROUGH for o in owners.values())
        if not candidates or (not poolers and self.explicit is None):
            return dict(owners)
        console = self._ensure_console(poolers, owners)
        if console is None:
            return dict(owners)
        started = time.perf_counter()
        try:
            state = console.state()
        except (psycopg.Error, PostgresError) as exc:
            self.close()
            self._retry_at = time.monotonic() + RETRY_SECONDS
            self._warn_once(
                "lost",
                f"lost the PgBouncer admin console ({_first_line(exc)}); owners stay "
                f"'pgbouncer (pooler)' until it is back (retried every {RETRY_SECONDS:g}s)",
            )
            return dict(owners)
        self.reads += 1
        self.last_read_seconds = time.perf_counter() - started
        pid = self._console_pid
        if pid is None and len(poolers) == 1:
            pid = next(iter(poolers))
        return self._see.apply(backends, owners, state, pid)

    def _ensure_console(
        self, poolers: Mapping[int, Owner], owners: Mapping[int, Owner]
    ) -> AdminConsole | None:
        if self._console is not None:
            return self._console
        if time.monotonic() < self._retry_at:
            return None
        held = {pid: sum(o.pid == pid for o in owners.values()) for pid in poolers}
        for pid, owner in poolers.items():
            name = owner.detail.split(":", 1)[0]
            if name != "pgbouncer":
                self._warn_once(
                    f"other:{name}",
                    f"{name} {pid} (pooler) holds {held[pid]} backend(s): seeing through "
                    f"{name} is not supported, so they stay owned by '{name} (pooler)', "
                    "never called a worker; PgBouncer is (its admin console)",
                )
        if self.explicit is not None:
            return self._open(AdminConsole(self.explicit), None, "--pgbouncer")
        bouncers = [pid for pid, o in poolers.items() if o.detail.startswith("pgbouncer")]
        return self._discover(bouncers[0], held[bouncers[0]]) if bouncers else None

    def _discover(self, pid: int, held: int) -> AdminConsole | None:
        """The console of PgBouncer ``pid`` on this host, from its config file."""
        try:
            address = read_console(pid)
        except ConfigUnreadable as exc:
            self._give_up(pid, held, str(exc))
            return None
        role, password = self._role()
        if not address.allows(role):
            self._give_up(
                pid,
                held,
                f"role {role!r} of --dsn is not in admin_users or stats_users of {address.config}",
            )
            return None
        console = AdminConsole(_dsn(address, role, password))
        return self._open(console, pid, str(address.config))

    def _open(self, console: AdminConsole, pid: int | None, source: str) -> AdminConsole | None:
        try:
            console.open()
        except PostgresError as exc:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            self._warn_once(
                "open",
                f"{exc.args[0] if exc.args else exc} (from {source}); owners stay "
                f"'pgbouncer (pooler)', never called workers; {_HINT}",
            )
            return None
        self._console, self._console_pid = console, pid
        return console

    def _give_up(self, pid: int | None, held: int, why: str) -> None:
        self._retry_at = time.monotonic() + RETRY_SECONDS
        self._warn_once(
            "discover",
            f"pgbouncer {pid} (pooler) holds {held} backend(s) and its admin console was not "
            f"found: {why}; owners stay 'pgbouncer (pooler)', never called workers; {_HINT}",
        )

    def _role(self) -> tuple[str, str | None]:
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            params = {}
        user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
        password = params.get("password") or os.environ.get("PGPASSWORD")
        return str(user), None if password is None else str(password)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._warn(message)


def _dsn(address: ConsoleAddress, role: str, password: str | None) -> str:
    params: dict[str, Any] = {
        "host": address.host,
        "port": address.port,
        "user": role,
        "dbname": CONSOLE_DATABASE,
    }
    if password:
        params["password"] = password
    return make_conninfo(**params)
