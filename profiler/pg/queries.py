"""SQL lives in ``sql/*.sql``, one file per query and per server version.

A query named ``activity`` may have variants ``activity.sql`` and
``activity_post_140000.sql``; :func:`load` picks the highest variant not above
the server's ``server_version_num``: one lookup, not an if-ladder.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_VARIANT = re.compile(r"^(?P<name>[a-z0-9_]+?)(?:_post_(?P<version>\d{6}))?\.sql$")


@cache
def _variants() -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for entry in resources.files("profiler.pg").joinpath("sql").iterdir():
        match = _VARIANT.match(entry.name)
        if match:
            version = int(match["version"] or 0)
            found.setdefault(match["name"], []).append((version, entry.name))
    for variants in found.values():
        variants.sort()
    return found


def names() -> list[str]:
    """Every query name, for tests that run them all against a real server."""
    return sorted(_variants())


def variants(name: str) -> list[int]:
    """The minimum server versions for which ``name`` has its own file."""
    return [version for version, _ in _variants()[name]]


@cache
def load(name: str, server_version: int) -> str:
    """The text of query ``name`` for a server whose ``server_version_num`` is given."""
    try:
        candidates = _variants()[name]
    except KeyError:
        raise KeyError(f"no SQL file for query {name!r}") from None
    chosen = [filename for version, filename in candidates if version <= server_version]
    if not chosen:
        raise KeyError(f"query {name!r} has no variant for server version {server_version}")
    return (
        resources.files("profiler.pg")
        .joinpath("sql")
        .joinpath(chosen[-1])
        .read_text(encoding="utf-8")
    )
