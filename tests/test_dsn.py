from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiler.errors import UsageError
from profiler.pg import dsn


@pytest.mark.parametrize(
    ("given_dsn", "expected"),
    [
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("postgres://app@db/app", "postgresql://app@db/app"),
        ("postgresql+psycopg://app:pw@db:5432/app", "postgresql://app:pw@db:5432/app"),
        ("postgresql+psycopg2://app@db/app", "postgresql://app@db/app"),
        ("postgresql+asyncpg://app@db/app?ssl=require", "postgresql://app@db/app?sslmode=require"),
        ("host=db dbname=app", "host=db dbname=app"),
    ],
)
def test_sqlalchemy_urls_are_accepted_as_they_are(given_dsn: str, expected: str) -> None:
    assert dsn.to_libpq(given_dsn) == expected


def test_other_schemes_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a PostgreSQL DSN"):
        dsn.to_libpq("mysql://app@db/app")


def test_resolve_prefers_option_then_profiler_dsn_then_database_url() -> None:
    env = {"PROFILER_DSN": "postgresql://a@h/a", "DATABASE_URL": "postgresql+asyncpg://b@h/b"}
    assert dsn.resolve("postgresql://o@h/o", env) == "postgresql://o@h/o"
    assert dsn.resolve(None, env) == "postgresql://a@h/a"
    assert dsn.resolve(None, {"DATABASE_URL": env["DATABASE_URL"]}) == "postgresql://b@h/b"
    assert dsn.resolve(None, {}) is None


# A leading "Zq9" cannot occur in the rest of these DSNs, so finding the password
# anywhere in the output means it leaked, not that it happens to spell "postgres".
_secret = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=3).map(
    lambda s: "Zq9" + s
)


@given(password=_secret)
def test_redact_never_shows_a_password_in_a_uri(password: str) -> None:
    # GIVEN a password in every place a DSN may carry one
    uri = dsn.build(host="db", port=5432, user="app", dbname="app", password=password)
    # WHEN shown / THEN the password is gone
    assert password not in dsn.redact(uri)
    assert password not in dsn.redact(f"postgresql://db/app?password={password}")
    assert password not in dsn.redact(f"host=db password={password} user=app")
    assert password not in dsn.redact(f"host=db password='{password} x' user=app")
