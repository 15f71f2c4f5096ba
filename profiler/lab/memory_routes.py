"""The ``memory`` scenario: large responses built while sessions are held, until the OOM kill.

The seed incident ended with workers growing from 450 MB to 0.7-1.9 GB and the
kernel OOM-killing them at the container's limit. The mechanism, reproduced
here on ``GET /servers``: the handler opens its session through
``Depends(get_db)`` (held until the response is sent), then builds the whole
response in memory, fetching each server's manifest from the downstream one
call at a time and inlining it, and finally encodes it all at once. Every
request in flight holds a connection *and* a growing response; under load the
pool empties, requests queue, more responses are in memory at once, and RSS
climbs until the workers' cgroup (``lab up --memory-limit``) reaches its limit.

The manifests are big strings (one allocation each), so memray tracks the growth
at the cost of a few records per request, and the sites it names are this
module's lines.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from profiler.lab.gateway import fresh, held, queries
from profiler.lab.gateway.runtime import RuntimeDep
from profiler.lab.gateway.schemas import PageQuery
from profiler.lab.schema import Server

MIB = 1 << 20
MANIFEST_BYTES = 4 * MIB  # each server's manifest, as the response inlines it
MANIFESTS = 8  # servers per response whose manifest is fetched: 32 MiB, twice when encoded
MANIFEST_LATENCY = 0.3  # seconds per downstream call: about 2 s per response

Db = Annotated[Session, Depends(held.get_db)]
Page = Annotated[PageQuery, Query()]

memory = APIRouter()


@memory.get("/servers")
async def list_servers_with_manifests(
    user: fresh.CurrentUser, db: Db, runtime: RuntimeDep, page: Page
) -> Response:
    """The catalogue with every server's manifest inlined, built whole while ``db`` is open."""
    servers = queries.page(db, Server, limit=page.limit, offset=page.offset)  # autobegin
    entries = []
    for server in servers[:MANIFESTS]:
        manifest = await fetch_manifest(runtime.http, server.name)  # the session stays open
        entries.append(with_manifest(queries.as_dict(server), manifest))
    return Response(json.dumps(entries, default=str), media_type="application/json")


async def fetch_manifest(http: httpx.AsyncClient, name: str) -> str:
    """One downstream call: a few KB of JSON describing the server."""
    response = await http.post(
        "/invoke", params={"latency": MANIFEST_LATENCY}, json={"tool": name, "arguments": {}}
    )
    return response.text


def with_manifest(row: dict[str, Any], manifest: str) -> dict[str, Any]:
    """The row with its manifest repeated to :data:`MANIFEST_BYTES`: one big string."""
    copies = max(1, MANIFEST_BYTES // max(len(manifest), 1))
    return {**row, "manifest": manifest * copies}
