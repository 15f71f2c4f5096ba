"""Calling the downstream service: the slow await that sessions must not span.

One ``httpx.AsyncClient`` per worker, created in the lifespan, so connections
to the downstream are reused as a real gateway's are. Its timeout is generous
(60 s) because the lab studies what the gateway does while it waits, not
downstream timeouts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

DOWNSTREAM_TIMEOUT = 60.0
# Far above what one worker has in flight, so the downstream client never queues
# requests and the only pool a request can wait on is SQLAlchemy's.
DOWNSTREAM_CONNECTIONS = 1000


@dataclass(frozen=True, slots=True)
class ToolCall:
    """What one downstream call did, as the invocation log records it."""

    started_at: datetime
    duration_ms: float
    status: str  # "ok" or "error"
    result: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def create_http_client(downstream_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=downstream_url,
        timeout=DOWNSTREAM_TIMEOUT,
        limits=httpx.Limits(max_connections=DOWNSTREAM_CONNECTIONS, max_keepalive_connections=100),
    )


async def call_tool(http: httpx.AsyncClient, tool_name: str, arguments: dict[str, Any]) -> ToolCall:
    """``POST /invoke`` on the downstream; a failure is a result to record, not an exception."""
    started_at = datetime.now(timezone.utc)
    begun = time.perf_counter()
    try:
        response = await http.post("/invoke", json={"tool": tool_name, "arguments": arguments})
        response.raise_for_status()
        payload = response.json()
        result = payload if isinstance(payload, dict) else {"value": payload}
        status = "ok"
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: the body was not JSON
        result = {"error": f"{type(exc).__name__}: {exc}"}
        status = "error"
    duration_ms = round((time.perf_counter() - begun) * 1000, 1)
    return ToolCall(started_at, duration_ms, status, result)
