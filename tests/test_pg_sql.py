"""Every SQL file runs against the real server, in the variant chosen for its version."""

from __future__ import annotations

import psycopg
import pytest

from profiler.pg import queries

# Sample values for queries that take bound parameters.
PARAMETERS: dict[str, dict[str, object]] = {
    "state_counts": {"application_name": "profiler"},
}


@pytest.mark.postgres
@pytest.mark.parametrize("name", queries.names())
def test_every_query_runs_on_the_test_server(
    name: str, postgres_dsn: str, server_version: int
) -> None:
    sql = queries.load(name, server_version)
    assert sql.lstrip().startswith("/* profiler */"), "every query carries the profiler marker"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql, PARAMETERS.get(name)).fetchall()


def test_load_picks_the_highest_variant_not_above_the_server() -> None:
    for name in queries.names():
        versions = queries.variants(name)
        assert versions[0] == 0, f"{name} needs a base variant"
        for version in versions:
            assert queries.load(name, version) == queries.load(name, version + 1)
