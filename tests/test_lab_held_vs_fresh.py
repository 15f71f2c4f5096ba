"""The lab reproduces the incident: `held` saturates the pool, `fresh` does not.

Acceptance for the foundation: the reference lab (``profiler.lab.record.reference_options``:
2 workers, overflow 0) with a pool of 4 per worker, a 1 s downstream latency and
SQLAlchemy's 30 s checkout timeout, under 40 users for 15 s. Both modes run against the
test server, and a plain SQL query on pg_stat_activity (not our sampler) watches.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg
import pytest

from profiler.lab.lifecycle import down, up
from profiler.lab.load import run_load
from profiler.lab.record import REFERENCE_LAB, reference_options
from profiler.session.load_record import LoadResult

WORKERS, MAX_OVERFLOW = REFERENCE_LAB.workers, REFERENCE_LAB.max_overflow
# Lighter than the reference where this test needs it: a pool of 4 that 40 users empty,
# and a checkout that waits (SQLAlchemy's 30 s default, not the reference's 0.1 s) so the
# requests queued behind the held pool stay unfinished, which is what the test counts.
POOL_SIZE, POOL_TIMEOUT = 4, 30.0
USERS, SECONDS, LATENCY = 40, 15.0, 1.0

WATCH = """
SELECT count(*)::int,
       count(*) FILTER (WHERE state = 'idle in transaction')::int,
       coalesce(extract(epoch FROM max(clock_timestamp() - state_change)
                FILTER (WHERE state = 'idle in transaction')), 0)::float8
FROM pg_stat_activity
WHERE application_name = 'lab-gateway'
"""


@dataclass(frozen=True)
class Observed:
    load: LoadResult
    max_connections: int
    max_idle_in_tx: int
    max_idle_in_tx_seconds: float


def _run_lab(mode: str, dsn: str) -> Observed:
    options = reference_options(
        mode,  # type: ignore[arg-type]
        dsn,
        pool_size=POOL_SIZE,
        pool_timeout=POOL_TIMEOUT,
        downstream_latency=LATENCY,
    )
    state = up(options)
    try:
        result: list[LoadResult] = []
        loader = threading.Thread(
            target=lambda: result.append(run_load(state.url, users=USERS, seconds=SECONDS))
        )
        samples: list[tuple[int, int, float]] = []
        with psycopg.connect(dsn, autocommit=True) as watcher:
            loader.start()
            while loader.is_alive():
                samples.append(watcher.execute(WATCH).fetchone())
                time.sleep(0.2)
        loader.join()
    finally:
        down()
    return Observed(
        load=result[0],
        max_connections=max(s[0] for s in samples),
        max_idle_in_tx=max(s[1] for s in samples),
        max_idle_in_tx_seconds=max(s[2] for s in samples),
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_held_saturates_the_pool_and_fresh_does_not(postgres_dsn: str, capsys) -> None:
    # WHEN the same load runs against both strategies
    held = _run_lab("held", postgres_dsn)
    fresh = _run_lab("fresh", postgres_dsn)

    with capsys.disabled():
        for name, seen in (("held", held), ("fresh", fresh)):
            print(
                f"\n[lab {name}] {seen.load.rps} req/s ok, p50 {seen.load.p50_ms} ms, "
                f"p99 {seen.load.p99_ms} ms, {seen.load.errors} errors of {seen.load.requests}, "
                f"{seen.load.unfinished} unfinished; connections max {seen.max_connections}, "
                f"idle in tx max {seen.max_idle_in_tx} for up to {seen.max_idle_in_tx_seconds:.2f}s"
            )

    # THEN held: the pool of every worker that took requests is used up, all of it
    # idle in transaction for >= ~1 s. (asyncio accepts every pending connection at
    # once, so one worker may take all 40 users while the other stays idle.)
    per_worker = POOL_SIZE + MAX_OVERFLOW
    assert held.max_connections in range(per_worker, WORKERS * per_worker + 1, per_worker)
    assert held.max_idle_in_tx == held.max_connections
    assert held.max_idle_in_tx_seconds >= 0.9
    # ... while requests wait: more requests stuck at the end than there are connections
    assert held.load.unfinished > WORKERS * per_worker
    # AND fresh: nothing idle in transaction beyond a fraction of a second
    assert fresh.max_idle_in_tx_seconds < 0.5
    # AND fresh serves more
    assert fresh.load.rps > 2 * held.load.rps
