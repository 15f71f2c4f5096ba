"""Every SQL file runs against the real server, in the variant chosen for its version."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

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


SQL = Path(queries.__file__).parent / "sql"


def _file(name: str, version: int) -> str:
    """The text of one variant file, read directly (not through the loader)."""
    suffix = f"_post_{version:06d}" if version else ""
    return (SQL / f"{name}{suffix}.sql").read_text(encoding="utf-8")


def test_load_picks_the_highest_variant_not_above_the_server() -> None:
    # GIVEN every query and its variant files
    for name in queries.names():
        versions = queries.variants(name)
        assert versions[0] == 0, f"{name} needs a base variant"
        for index, version in enumerate(versions):
            # THEN a server at a variant's version, or above it and below the next one,
            # gets that variant's file, and a server just below it the previous one
            upper = versions[index + 1] - 1 if index + 1 < len(versions) else 999_999
            for server in {max(version, 1), version + 1, upper}:
                assert queries.load(name, server) == _file(name, version), (name, server)
            if index:
                assert queries.load(name, version - 1) == _file(name, versions[index - 1])


@pytest.mark.parametrize(
    ("server_version", "leader_pid", "query_id"),
    [
        (120000, False, False),  # PostgreSQL 12: neither column
        (120022, False, False),
        (130000, True, False),  # 13: leader_pid
        (130018, True, False),
        (140000, True, True),  # 14: query_id
        (150010, True, True),
        (180001, True, True),
    ],
)
def test_each_server_version_gets_the_columns_it_has(
    server_version: int, leader_pid: bool, query_id: bool
) -> None:
    # GIVEN the activity query as loaded for a server of that version
    sql = queries.load("activity", server_version)
    # THEN it reads the columns that server has, and NULLs the ones it has not
    assert ("a.leader_pid," in sql) is leader_pid, server_version
    assert ("NULL::int                            AS leader_pid" in sql) is not leader_pid
    assert ("a.query_id," in sql) is query_id, server_version
    assert ("NULL::bigint                         AS query_id" in sql) is not query_id


@pytest.mark.postgres
def test_the_chosen_variant_reads_query_id_on_this_server(
    postgres_dsn: str, server_version: int
) -> None:
    # GIVEN a backend that ran a query with compute_query_id on, now idle
    if server_version < 140000:
        pytest.skip(f"query_id is PostgreSQL 14+; this server is {server_version}")
    with (
        psycopg.connect(postgres_dsn, autocommit=True) as other,
        psycopg.connect(postgres_dsn, autocommit=True) as sampler,
    ):
        other.execute("SET compute_query_id = on")
        other.execute("SELECT count(*) FROM pg_class").fetchall()
        other_pid = other.info.backend_pid
        # WHEN the activity query chosen for this server samples it
        with sampler.cursor(row_factory=dict_row) as cursor:
            rows = cursor.execute(queries.load("activity", server_version)).fetchall()
    # THEN its query_id is the server's (the base variant would give NULL)
    row = next(r for r in rows if r["pid"] == other_pid)
    assert row["query_id"] is not None, row


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
