"""What ``profiler lint`` counts as a session dependency or a slow call; how deep calls go."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SESSION_DEPENDENCIES = ("get_db", "get_session", "get_async_session", "get_db_session")
DEFAULT_SLOW_CALLS = (
    "requests.*",
    "time.sleep",
    "subprocess.*",
    "urllib.request.urlopen",
    "httpx.get",
    "httpx.post",
    "httpx.put",
    "httpx.patch",
    "httpx.delete",
    "httpx.head",
    "httpx.options",
    "httpx.request",
    "httpx.stream",
)
DEFAULT_MAX_DEPTH = 6


@dataclass(frozen=True, slots=True)
class Settings:
    """What counts as a session dependency and as a slow call; how far calls are followed."""

    session_dependencies: tuple[str, ...] = DEFAULT_SESSION_DEPENDENCIES
    slow_calls: tuple[str, ...] = DEFAULT_SLOW_CALLS
    max_depth: int = DEFAULT_MAX_DEPTH
