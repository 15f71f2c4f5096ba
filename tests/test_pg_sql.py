"""Every SQL file runs against the real server, in the variant chosen for its version."""

from __future__ import annotations

import psycopg
import pytest

from profiler.pg import queries


@pytest.mark.postgres
@pytest.mark.parametrize("name", queries.names())
def test_every_query_runs_on_the_test_server(
    name: str, postgres_dsn: str, server_version: int
) -> None:
    sql = queries.load(name, server_version)
    assert sql.lstrip().startswith("/* profiler */"), "every query carries the profiler marker"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql, None).fetchall()


def test_load_picks_the_highest_variant_not_above_the_server() -> None:
    for name in queries.names():
        versions = queries.variants(name)
        assert versions[0] == 0, f"{name} needs a base variant"
        for version in versions:
            assert queries.load(name, version) == queries.load(name, version + 1)


@pytest.mark.postgres
def test_older_variants_still_run_on_this_server(postgres_dsn: str, server_version: int) -> None:
    # Variants for older servers only leave out newer columns, so they must run
    # here too: that is how the PostgreSQL 12 and 13 files get exercised.
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for name in queries.names():
            for version in queries.variants(name):
                if version <= server_version:
                    sql = queries.load(name, max(version, 1))
                    conn.execute(sql, None).fetchall()


@pytest.mark.postgres
def test_activity_columns_are_in_the_order_of_the_record(postgres_dsn: str) -> None:
    # The sampler builds ActivitySample positionally, for speed.
    from profiler.model import ActivitySample

    expected = list(ActivitySample._fields)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for version in queries.variants("activity"):
            cur = conn.execute(queries.load("activity", max(version, 1)))
            assert [c.name for c in cur.description] == expected, version
