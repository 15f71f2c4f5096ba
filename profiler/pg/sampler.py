"""Sampling ``pg_stat_activity`` as a good citizen of a production database.

One autocommit connection (a sampler must never itself sit idle in
transaction, and activity data is frozen for the length of a transaction, so
each sample must be its own statement), ``application_name='profiler'``,
prepared statements, our own backend excluded, ``statement_timeout`` below the
interval. Lock detail (``pg_blocking_pids``) is kept out of the fast loop. A
lost connection becomes a recorded :class:`Gap` and a bounded reconnect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from types import TracebackType

import psycopg
from psycopg.rows import RowMaker, dict_row

from profiler.errors import PostgresError, UsageError
from profiler.model import ActivitySample, Gap, Snapshot
from profiler.pg import queries
from profiler.pg.connect import connect
from profiler.pg.pgbouncer import PoolerLens
from profiler.targets.ownership import OwnershipResolver

MIN_INTERVAL = 0.1  # 10 Hz: 10x the best external samplers
LOCK_DETAIL_EVERY = 1.0
RECONNECT_BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

Warn = Callable[[str], None]


def _ignore(_: str) -> None:
    pass


class ActivitySampler:
    """Snapshots of every backend, each mapped to the local process that owns it."""

    def __init__(
        self,
        dsn: str,
        *,
        interval: float = 1.0,
        owners: bool = True,
        warn: Warn = _ignore,
        pgbouncer: str | None = None,
    ) -> None:
        """``pgbouncer``: the admin console's DSN (``--pgbouncer``), to see through
        PgBouncer to the workers; without it one running on this host is found."""
        if not interval >= MIN_INTERVAL:
            raise UsageError(f"the interval must be at least {MIN_INTERVAL}s, not {interval}")
        self.dsn = dsn
        self.interval = interval
        self._warn = warn
        self._want_owners = owners
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._resolver: OwnershipResolver | None = None
        self._lens = PoolerLens(dsn, pgbouncer, warn=warn) if owners else None
        self._server_version = 0
        self._role = ""
        self._warned_privilege = False
        self._last_lock_detail = float("-inf")

    # -- connection ---------------------------------------------------------------

    def open(self) -> None:
        conn = connect(self.dsn)
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                sql = queries.load("session_setup", conn.info.server_version)
                setup = cur.execute(sql).fetchone()
                # Below the interval, so a slow server costs a skipped sample, not a pile-up.
                timeout = f"{max(50, int(self.interval * 800))}ms"
                cur.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))
        except psycopg.Error as exc:
            conn.close()
            raise PostgresError(f"cannot prepare the sampling session: {exc}") from None
        assert setup is not None
        self._conn = conn
        self._server_version = int(setup["server_version_num"])
        self._role = str(setup["role_name"])
        if self._want_owners and self._resolver is None:
            port = setup["server_port"]
            self._resolver = OwnershipResolver(server_port=int(port) if port else None)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lens is not None:
            self._lens.close()

    def __enter__(self) -> ActivitySampler:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def server_version(self) -> int:
        return self._server_version

    @property
    def backend_pid(self) -> int | None:
        """Our own backend, which every snapshot leaves out."""
        return None if self._conn is None else self._conn.info.backend_pid

    # -- one sample -----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """One statement, one instant: every backend but ours, owners resolved."""
        if self._conn is None:
            self.open()
        assert self._conn is not None
        # Our clock, not the server's (``sampled_at`` is the server's): stacks and RSS
        # are stamped on ours, and correlation puts server times on it through the
        # difference, which also absorbs any skew between the two hosts.
        taken_at = datetime.now(timezone.utc)
        started = time.perf_counter()
        sql = queries.load("activity", self._server_version)
        # Tuples built positionally, times as float epochs: at 500 backends,
        # class_row's keyword calls and datetime decoding were most of our CPU
        # per snapshot. The SQL's column order is ActivitySample's field order
        # (a test checks).
        with self._conn.cursor(row_factory=_activity_rows) as cur:
            backends = tuple(cur.execute(sql, prepare=True).fetchall())
        fetched = time.perf_counter()
        self._check_privilege(backends)
        blocked_by = self._lock_detail(backends)
        owners = {}
        if self._resolver is not None:
            owners = self._resolver.resolve(backends)
            if self._lens is not None:
                owners = self._lens.apply(backends, owners)
        return Snapshot(
            taken_at=taken_at,
            server_version=self._server_version,
            backends=backends,
            owners=owners,
            blocked_by=blocked_by,
            fetch_seconds=fetched - started,
            owner_seconds=time.perf_counter() - fetched,
        )

    def _check_privilege(self, backends: tuple[ActivitySample, ...]) -> None:
        if self._warned_privilege or not any(b.query_hidden for b in backends):
            return
        self._warned_privilege = True
        self._warn(
            f"role {self._role} sees other roles' sessions as <insufficient privilege> "
            f"(no state, age or query for them); fix: GRANT pg_monitor TO {self._role};"
        )

    def _lock_detail(self, backends: tuple[ActivitySample, ...]) -> dict[int, tuple[int, ...]]:
        now = time.monotonic()
        waiting = any(b.wait_event_type == "Lock" for b in backends)
        if not waiting or now - self._last_lock_detail < LOCK_DETAIL_EVERY:
            return {}
        self._last_lock_detail = now
        assert self._conn is not None
        rows = self._conn.execute(
            queries.load("blocking", self._server_version), prepare=True
        ).fetchall()
        return {int(str(pid)): tuple(blockers) for pid, blockers in rows}  # type: ignore[arg-type]

    # -- a stream of samples -------------------------------------------------------

    def run(
        self, *, seconds: float | None = None, stop: threading.Event | None = None
    ) -> Iterator[Snapshot | Gap]:
        """Snapshots every ``interval`` until ``seconds`` pass or ``stop`` is set.

        Ticks are on a fixed schedule (a slow sample skips ticks rather than
        drifting). A lost connection yields a :class:`Gap` once sampling resumes;
        if the server never comes back before the end, the open gap is yielded
        at the end.
        """
        stop = stop or threading.Event()
        deadline = None if seconds is None else time.monotonic() + seconds
        next_tick = time.monotonic()
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                yield self.snapshot()
            except (psycopg.OperationalError, PostgresError) as exc:
                gap = self._reconnect(_reason(exc), stop, deadline)
                yield gap
                next_tick = time.monotonic()
                continue
            next_tick += self.interval
            now = time.monotonic()
            if next_tick < now:  # fell behind: skip the missed ticks
                next_tick = now + self.interval - (now - next_tick) % self.interval
            remaining = next_tick - now
            if deadline is not None:
                remaining = min(remaining, max(0.0, deadline - now))
            stop.wait(remaining)

    def _reconnect(self, reason: str, stop: threading.Event, deadline: float | None) -> Gap:
        started = datetime.now(timezone.utc)
        self.close()
        attempt = 0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)])
            attempt += 1
            try:
                self.open()
                break
            except PostgresError:
                continue
        return Gap(started_at=started, ended_at=datetime.now(timezone.utc), reason=reason)


def _activity_rows(cursor: object) -> RowMaker[ActivitySample]:
    """psycopg row factory: the row's values straight into the record, positionally."""
    return ActivitySample._make


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
