"""The slow service the lab gateway calls: the 0.5-5 s downstream call of the incident.

A raw ASGI app rather than FastAPI, so that it is never the bottleneck and a
profile of the lab shows the gateway's time, not this service's: a request
costs one ``asyncio.sleep`` and one small ``json.dumps``. The answer is a few
KB of MCP-shaped tool result, so the gateway pays something to parse it, as it
would for a real tool.

Run as ``python -m profiler.lab.downstream --host 127.0.0.1 --port P --latency S``.
A ``latency`` query parameter on ``POST /invoke`` overrides ``--latency`` for
that request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_LATENCY = 600.0
MAX_BODY = 1 << 20

# What every answer carries besides the echo: about 4 KB of JSON, built once.
_ROWS: list[dict[str, Any]] = [
    {
        "id": index,
        "title": f"result {index}: matching record from the downstream index",
        "score": round(1.0 / (index + 1), 4),
        "url": f"https://downstream.example/records/{index}",
        "attributes": {"region": "eu-west-1", "owner": f"team-{index % 7}", "version": index},
    }
    for index in range(20)
]


def create_app(latency: float) -> App:
    """The ASGI app; ``latency`` is the default sleep of ``POST /invoke`` in seconds."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # served with lifespan and websockets off
            raise RuntimeError(f"unsupported ASGI scope {scope['type']!r}")
        method, path = scope["method"], scope["path"]
        if path == "/health" and method in ("GET", "HEAD"):
            await _respond(send, 200, {"status": "ok"})
        elif path == "/invoke" and method == "POST":
            await _invoke(scope, receive, send, latency)
        elif path in ("/health", "/invoke"):
            await _respond(send, 405, {"error": f"{method} not allowed on {path}"})
        else:
            await _respond(send, 404, {"error": f"no route {path}"})

    return app


async def _invoke(scope: Scope, receive: Receive, send: Send, default_latency: float) -> None:
    body = await _read_body(receive)
    if body is None:
        await _respond(send, 413, {"error": f"body larger than {MAX_BODY} bytes"})
        return
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        await _respond(send, 400, {"error": "body is not JSON"})
        return
    latency = _latency(scope, default_latency)
    if latency is None:
        await _respond(send, 400, {"error": f"latency must be a number in [0, {MAX_LATENCY:g}]"})
        return
    await asyncio.sleep(latency)
    arguments = request.get("arguments", {}) if isinstance(request, dict) else {}
    await _respond(
        send,
        200,
        {
            "content": [{"type": "text", "text": f"{len(_ROWS)} records matched"}],
            "structuredContent": {"items": _ROWS, "arguments": arguments, "next_cursor": None},
            "isError": False,
            "latency_s": latency,
        },
    )


def _latency(scope: Scope, default: float) -> float | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("latency")
    if not values:
        return default
    try:
        latency = float(values[-1])
    except ValueError:
        return None
    return latency if math.isfinite(latency) and 0 <= latency <= MAX_LATENCY else None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def command(host: str, port: int, latency: float) -> list[str]:
    """The command line serving the downstream on ``host:port``, one spelling for all callers."""
    return [
        sys.executable,
        "-m",
        "profiler.lab.downstream",
        "--host",
        host,
        "--port",
        str(port),
        "--latency",
        str(latency),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m profiler.lab.downstream",
        description="A downstream service whose POST /invoke answers after --latency seconds.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (only this one)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per /invoke")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.latency) and 0 <= args.latency <= MAX_LATENCY):
        parser.error(f"--latency must be in [0, {MAX_LATENCY:g}]")

    import uvicorn

    uvicorn.run(
        create_app(args.latency),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        lifespan="off",
        ws="none",
    )


if __name__ == "__main__":
    main()
