"""Typed records that cross module boundaries.

Frozen, slotted dataclasses: cheap, hashable, and impossible to mutate behind a
reader's back. Dicts appear only at the edges (JSON output, templates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from profiler.errors import ExitCode

if TYPE_CHECKING:
    from collections.abc import Mapping


class CheckStatus(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``profiler doctor``: what was checked, what was found, the fix.

    ``exit_code`` is the code the command ends with when this check fails and
    is required (for example 4 for PostgreSQL, 5 for a missing tool).
    """

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""
    required: bool = True
    exit_code: ExitCode = ExitCode.USAGE

    @property
    def blocking(self) -> bool:
        return self.required and self.status is CheckStatus.FAIL


@dataclass(frozen=True, slots=True)
class RolePrivileges:
    """What the connected role may see in ``pg_stat_activity``."""

    role_name: str
    is_superuser: bool
    can_read_all_stats: bool
    server_version_num: int
    server_version: str

    @property
    def sees_all_queries(self) -> bool:
        return self.is_superuser or self.can_read_all_stats


class ActivitySample(NamedTuple):
    """One backend's row of ``pg_stat_activity`` in one snapshot.

    Field names are the view's. Times are epoch seconds on the server's clock
    (``sampled_at`` is that clock when the row was read, so every age below is
    measured on one clock); :func:`as_datetime` turns them into datetimes for
    display. Floats, and a NamedTuple rather than a frozen dataclass, because
    hundreds are built per snapshot: datetime decoding and the dataclass's
    per-field ``__setattr__`` were most of a snapshot's CPU at 500 backends.
    """

    sampled_at: float
    pid: int
    leader_pid: int | None
    datname: str | None
    usename: str | None
    application_name: str | None
    client_addr: str | None
    client_hostname: str | None
    client_port: int | None
    backend_start: float | None
    xact_start: float | None
    query_start: float | None
    state_change: float | None
    wait_event_type: str | None
    wait_event: str | None
    state: str | None
    backend_xid: str | None
    backend_xmin: str | None
    query_id: int | None
    query: str | None
    query_truncated: bool
    backend_type: str | None

    @property
    def state_age_seconds(self) -> float | None:
        return _seconds_between(self.state_change, self.sampled_at)

    @property
    def xact_age_seconds(self) -> float | None:
        return _seconds_between(self.xact_start, self.sampled_at)

    @property
    def in_transaction(self) -> bool:
        """Holding a transaction open: what keeps a pooled connection from being reused."""
        return self.xact_start is not None

    @property
    def query_hidden(self) -> bool:
        """The row belongs to a role we may not inspect (no pg_monitor)."""
        return self.query == INSUFFICIENT_PRIVILEGE


INSUFFICIENT_PRIVILEGE = "<insufficient privilege>"
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")


def _seconds_between(start: float | None, end: float) -> float | None:
    return None if start is None else end - start


def as_datetime(epoch: float | None) -> datetime | None:
    """A sample's epoch seconds as an aware UTC datetime."""
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every backend at one instant, with who owns each one and who blocks whom.

    ``taken_at`` is our clock (UTC) just before the query, the clock stacks and
    RSS are stamped on; each row's ``sampled_at`` is the server's, so their
    difference puts server times on ours. ``owners`` is keyed by backend pid;
    ``blocked_by`` only has entries for
    backends waiting on a lock when lock detail was fetched (at most once a
    second). ``fetch_seconds`` and ``owner_seconds`` are our own costs.
    """

    taken_at: datetime
    server_version: int
    backends: tuple[ActivitySample, ...]
    owners: Mapping[int, Owner]
    blocked_by: Mapping[int, tuple[int, ...]]
    fetch_seconds: float = 0.0
    owner_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Gap:
    """Sampling stopped between two instants (server restart, network): recorded, not hidden.

    Times come from our clock: the server's was unreachable.
    """

    started_at: datetime
    ended_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Worker:
    """A process profiling can target, with the facts attaching to it needs.

    ``role`` is ``master`` (forks workers, serves nothing itself), ``worker``
    (serves requests; what we attach to) or ``process`` (matched by
    ``--match`` or ``--pid`` without being part of a known server).
    ``ns_pid`` is the PID inside the process's own PID namespace (equal to
    ``pid`` outside containers); ``memray_importable`` was asked of the
    process's own interpreter, None when that could not be run.
    """

    pid: int
    ppid: int
    role: str
    server: str | None
    cmdline: str
    executable: str
    python_version: str | None
    rss_bytes: int
    cpu_percent: float
    threads: int
    started_at: float
    pg_connections: int
    container: str | None
    ns_pid: int
    memray_importable: bool | None


# -- who holds a backend's client connection -----------------------------------------

OwnerKind = Literal["process", "pooler", "unix-socket", "background", "remote", "unknown"]

_DESCRIBE_LIMIT = 60
_KINDS: tuple[str, ...] = get_args(OwnerKind)
_KIND_LABELS = {
    "unix-socket": "unix socket",
    "background": "background worker",
    "remote": "remote host",
    "unknown": "unknown",
}


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a backend's client connection, or why no local process can be named.

    ``pids`` lists every process holding the socket when it is shared (a fork
    after connect: gunicorn's ``--preload``); ``pid`` is then the worker, the
    one that is no other holder's parent.

    ``via`` names the connection pooler the connection went through when the
    process was found behind it (``pgbouncer``): a worker seen through a pooler,
    never the pooler itself. A pooler's own owner (kind ``pooler``) carries its
    name first in ``detail``, then what we know about the connection.

    ``client_port`` is the local port of the TCP socket the owner holds: the
    backend's ``client_port`` for a direct connection, the client's port in
    PgBouncer's ``SHOW CLIENTS`` through the pooler, None over a Unix socket.
    The task sampler records the same port for each connection a task holds,
    which is how a task names its backend through a pooler (the backend PID a
    client sees there is PgBouncer's cancel key).
    """

    kind: OwnerKind
    pid: int | None = None
    cmdline: str | None = None
    detail: str = ""
    pids: tuple[int, ...] = ()
    via: str = ""
    client_port: int | None = None

    def to_json(self) -> dict[str, object] | None:
        """The ``owner`` object of our JSON output: ``{pid, cmdline}``, or null without a pid.

        >>> Owner("process", 42, "gunicorn: worker").to_json()
        {'pid': 42, 'cmdline': 'gunicorn: worker', 'kind': 'process', 'detail': '', 'via': None}
        >>> Owner("process", 42, "granian", via="pgbouncer").to_json()["via"]
        'pgbouncer'
        >>> Owner("remote", detail="on another host").to_json() is None
        True
        """
        if self.pid is None:
            return None
        return {
            "pid": self.pid,
            "cmdline": self.cmdline,
            "kind": self.kind,
            "detail": self.detail,
            "via": self.via or None,
        }

    def to_record(self) -> dict[str, object]:
        """Every field, JSON-safe, for files that must read back into an ``Owner``.

        ``via`` and ``client_port`` only when set, so recordings without them keep
        their bytes.
        """
        record: dict[str, object] = {
            "kind": self.kind,
            "pid": self.pid,
            "cmdline": self.cmdline,
            "detail": self.detail,
            "pids": list(self.pids),
        }
        if self.via:
            record["via"] = self.via
        if self.client_port is not None:
            record["client_port"] = self.client_port
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Owner:
        """The inverse of :meth:`to_record`; an unknown kind reads as ``unknown``.

        >>> owner = Owner("pooler", 7, "/usr/sbin/pgbouncer", "pgbouncer", (7,))
        >>> Owner.from_record(owner.to_record()) == owner
        True
        >>> behind = Owner("process", 42, "granian", pids=(42,), via="pgbouncer", client_port=5)
        >>> Owner.from_record(behind.to_record()) == behind
        True
        """
        kind = record.get("kind")
        pid = record.get("pid")
        port = record.get("client_port")
        return cls(
            kind=kind if kind in _KINDS else "unknown",
            pid=None if pid is None else int(pid),
            cmdline=record.get("cmdline"),
            detail=str(record.get("detail") or ""),
            pids=tuple(int(p) for p in record.get("pids") or ()),
            via=str(record.get("via") or ""),
            client_port=None if port is None else int(port),
        )

    def describe(self) -> str:
        """One short line for a table cell: who holds the connection, or why no local process.

        >>> Owner("process", 42, "python -m gunicorn app:app", pids=(41, 42)).describe()
        '42 python -m gunicorn app:app (+1 sharing)'
        >>> Owner("pooler", 7, "/usr/sbin/pgbouncer", "pgbouncer").describe()
        'pgbouncer 7 (pooler)'
        >>> Owner("pooler", 7, "pgbouncer", "pgbouncer: pooled, no client now").describe()
        'pgbouncer 7 (pooler)'
        >>> Owner("process", 42, "granian", via="pgbouncer").describe()
        '42 granian via pgbouncer'
        >>> Owner("unix-socket").describe()
        'unix socket'
        """
        if self.kind == "process":
            text = f"{self.pid} {_shorten(self.cmdline or '', _DESCRIBE_LIMIT)}".rstrip()
            text += f" (+{len(self.pids) - 1} sharing)" if len(self.pids) > 1 else ""
            return text + (f" via {self.via}" if self.via else "")
        if self.kind == "pooler":
            return pooler_label(self.detail, self.pid)
        return _KIND_LABELS[self.kind]


def pooler_label(detail: str, pid: int | None) -> str:
    """How tables name a pooler: ``pgbouncer 1234 (pooler)``, never as a worker.

    ``detail`` is a pooler owner's detail, which starts with the pooler's name.

    >>> pooler_label("pgbouncer: pooled, no client now", 7)
    'pgbouncer 7 (pooler)'
    >>> pooler_label("", None)
    'pooler'
    """
    name = detail.split(":", 1)[0].strip() or "pooler"
    if name == "pooler":
        return name if pid is None else f"pooler {pid}"
    return f"{name} (pooler)" if pid is None else f"{name} {pid} (pooler)"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
