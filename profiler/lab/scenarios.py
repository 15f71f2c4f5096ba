"""The lab's scenarios: one switch per known cause, and two healthy ones.

``profiler lab up --scenario NAME`` serves the same endpoints as the two modes
(the load generator needs no change), written so that one cause, and only
that one, makes the requests hold connections. ``benchmarks/diagnosis.py``
runs each under load and checks that the Diagnosis names ``expected`` first,
and that the healthy ones get no critical finding. No FastAPI here: the
command line and the benchmark read this catalogue without the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from profiler.lab.settings import Mode

MEMORY_LIMIT = 256 << 20
"""The ``memory`` scenario's default limit on its workers' cgroup (two workers together):
what they touch after the fork is charged to it, a handful of responses in flight."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """``mode``: the base router (``held`` or ``fresh``); ``expected``: the cause the
    Diagnosis should name first (None: a healthy gateway); ``users``: the load the
    benchmark drives; ``what``: one line for ``--help`` and the docs; ``memory_limit``:
    bytes on the workers' cgroup when ``lab up`` is given none (the scenario needs one);
    ``mix``: the load's request mix, when not the load generator's default."""

    name: str
    mode: Mode
    expected: str | None
    users: int
    what: str
    memory_limit: int | None = None
    mix: dict[str, float] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "held-await",
            "held",
            "session-held-across-await",
            24,
            "the incident: Depends(get_db) sessions held across the 2 s downstream call",
        ),
        Scenario(
            "held-serialise",
            "fresh",
            "held-across-serialisation",
            24,
            "a yield-dependency session held while a large list of ORM rows is serialised",
        ),
        Scenario(
            "middleware",
            "fresh",
            "middleware-session-across-call-next",
            24,
            "a BaseHTTPMiddleware opens a session and holds it across call_next",
        ),
        Scenario(
            "auth-second-session",
            "fresh",
            "two-connections-per-request",
            24,
            "sync handlers on Depends(get_db) plus an auth dependency with its own session",
        ),
        Scenario(
            "sync-db",
            "fresh",
            "sync-db-in-async",
            24,
            "short sessions, but slow sync queries inside async def handlers block the loop",
        ),
        Scenario(
            "streaming",
            "fresh",
            "streaming-holds-session",
            24,
            "list endpoints stream their rows from a session held for the whole response",
        ),
        Scenario(
            "memory",
            "fresh",
            "oom-kill",
            16,
            "large responses built in memory while sessions are held, until the OOM kill",
            memory_limit=MEMORY_LIMIT,
            mix={"servers": 0.6, "invoke": 0.4},
        ),
        Scenario("fresh", "fresh", None, 24, "the fix: short sessions, nothing held"),
        Scenario(
            "fresh-overload",
            "fresh",
            None,
            96,
            "the fix under four times the users: slow, but nothing held",
        ),
    )
}
"""Every scenario by name, the causes first, then the healthy ones."""
