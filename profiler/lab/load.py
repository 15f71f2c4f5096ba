"""Bounded load on the lab gateway: N users, S seconds, loopback only.

An asyncio loop over one ``httpx.AsyncClient`` rather than locust: httpx is
already the lab's HTTP client, an asyncio user costs a coroutine instead of a
greenlet stack, and the whole run is one function call that tests and the demo
can await without a separate master/worker process tree. Each user sends one
request at a time (closed loop), like a client waiting on the gateway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from profiler.analysis.stats import percentile
from profiler.errors import UsageError
from profiler.lab.settings import API_TOKEN_COUNT, api_token
from profiler.session.load_record import LoadResult

MAX_USERS = 2000
MAX_SECONDS = 3600.0

# What a gateway's clients do: mostly tool invocations (which call downstream),
# the rest listing the catalogue.
DEFAULT_MIX: dict[str, float] = {
    "invoke": 0.5,
    "tools": 0.2,
    "servers": 0.1,
    "resources": 0.1,
    "prompts": 0.1,
}


def require_loopback(url: str) -> str:
    """Refuse any target that is not this machine: load never leaves loopback."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return url
    try:
        if ipaddress.ip_address(host).is_loopback:
            return url
    except ValueError:
        pass
    raise UsageError(
        f"load targets must be on loopback (127.0.0.0/8, ::1, localhost), not {host or url!r}",
        hint="run the load on the gateway's host against http://127.0.0.1:PORT",
    )


def run_load(
    url: str,
    *,
    users: int,
    seconds: float,
    mix: dict[str, float] | None = None,
    request_timeout: float = 30.0,
    seed: int = 1,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Drive ``users`` closed-loop users for ``seconds`` (at most), loopback only.

    ``stop``, when set, ends the run early as the deadline would: a caller that
    measures something else (a session whose start it cannot predict) keeps the
    load on exactly as long as it needs, with ``seconds`` still the bound.
    """
    require_loopback(url)
    if not 1 <= users <= MAX_USERS:
        raise UsageError(f"--users must be between 1 and {MAX_USERS}, not {users}")
    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError(f"--seconds must be in (0, {MAX_SECONDS:.0f}], not {seconds}")
    return asyncio.run(
        _run(url.rstrip("/"), users, seconds, mix or DEFAULT_MIX, request_timeout, seed, stop)
    )


@dataclass(slots=True)
class _Window:
    """When users may start requests: until the deadline, or until ``stop`` is set."""

    deadline: float
    stop: threading.Event | None

    def open(self) -> bool:
        return time.monotonic() < self.deadline and not (self.stop and self.stop.is_set())


@dataclass(slots=True)
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    in_flight: int = 0


async def _run(
    url: str,
    users: int,
    seconds: float,
    mix: dict[str, float],
    timeout: float,
    seed: int,
    stop: threading.Event | None,
) -> LoadResult:
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        tool_ids = await _tool_ids(client)
        tally = _Tally()
        started = time.monotonic()
        window = _Window(started + seconds, stop)
        pending = {
            asyncio.create_task(_user(client, index, window, mix, tool_ids, tally, seed))
            for index in range(users)
        }
        # Users stop starting requests when the window closes; one still waiting then
        # is cut off, so a run never lasts longer than asked.
        while pending and window.open():
            left = window.deadline - time.monotonic()
            _, pending = await asyncio.wait(pending, timeout=max(0.0, min(left, 0.1)))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.monotonic() - started
    ok = sorted(tally.latencies_ms)
    finished = sum(tally.statuses.values())
    return LoadResult(
        requests=finished,
        errors=tally.errors,
        rps=round(len(ok) / elapsed, 2),
        p50_ms=_round(percentile(ok, 50)),
        p95_ms=_round(percentile(ok, 95)),
        p99_ms=_round(percentile(ok, 99)),
        seconds=round(elapsed, 2),
        users=users,
        unfinished=tally.in_flight,
        by_status=dict(sorted(tally.statuses.items())),
    )


async def _tool_ids(client: httpx.AsyncClient) -> list[int]:
    headers = {"Authorization": f"Bearer {api_token(0)}"}
    try:
        response = await client.get("/tools", params={"limit": 500}, headers=headers)
    except httpx.ReadTimeout:
        # Up but silent: a worker's event loop blocked (the held gateway's pool checkout).
        raise UsageError(
            f"the gateway at {client.base_url} accepted GET /tools but did not answer it in"
            f" {client.timeout.read:g} s (ReadTimeout)",
            hint="a worker may be wedged; see what holds it with: profiler session run",
        ) from None
    except httpx.HTTPError as exc:
        raise UsageError(
            f"the gateway at {client.base_url} does not answer: {type(exc).__name__}: {exc}",
            hint="start it with: profiler lab up",
        ) from None
    if response.status_code != 200:
        raise UsageError(f"GET /tools answered {response.status_code}; is this the lab gateway?")
    return [int(tool["id"]) for tool in response.json()] or [1]


async def _user(
    client: httpx.AsyncClient,
    index: int,
    window: _Window,
    mix: dict[str, float],
    tool_ids: list[int],
    tally: _Tally,
    seed: int,
) -> None:
    rng = random.Random(seed * 100_003 + index)
    headers = {"Authorization": f"Bearer {api_token(index % API_TOKEN_COUNT)}"}
    kinds, weights = list(mix), list(mix.values())
    while window.open():
        kind = rng.choices(kinds, weights)[0]
        if kind == "invoke":
            method, path = "POST", f"/tools/{rng.choice(tool_ids)}/invoke"
            body: dict[str, object] | None = {"arguments": {"query": f"user-{index}"}}
        else:
            method, path, body = "GET", f"/{kind}", None
        tally.in_flight += 1
        begun = time.monotonic()
        try:
            response = await client.request(method, path, headers=headers, json=body)
        except httpx.HTTPError as exc:
            tally.in_flight -= 1
            tally.errors += 1
            tally.statuses[type(exc).__name__] += 1
            await asyncio.sleep(0.05)  # a refused connection fails at once; don't spin
            continue
        tally.in_flight -= 1
        tally.statuses[str(response.status_code)] += 1
        if response.status_code < 400:
            tally.latencies_ms.append((time.monotonic() - begun) * 1000)
        else:
            tally.errors += 1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
