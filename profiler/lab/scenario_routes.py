"""The gateway's scenario switches (:mod:`profiler.lab.scenarios`): one cause each.

Each scenario overrides some endpoints of the ``fresh`` router (the fix) with
the one pattern it reproduces, so that whatever the Diagnosis names is that
pattern's doing:

* ``held-serialise``: list endpoints on ``Depends(get_db)`` return 10000 ORM rows each;
  FastAPI serialises them while the dependency's session is still open;
* ``middleware``: a ``BaseHTTPMiddleware`` opens a session, queries, and holds
  it across ``await call_next(request)``;
* ``auth-second-session``: sync (``def``) handlers on ``Depends(get_db)`` behind
  an authentication dependency with a session of its own: two connections per
  request, for the request's whole life;
* ``sync-db``: short sessions, but a slow query inside ``async def`` handlers:
  the event loop waits on the database;
* ``streaming``: ``/servers``, ``/resources`` and ``/prompts`` stream their rows from
  a session held until the last chunk is sent (``/tools`` stays JSON: the load
  generator reads tool ids from it);
* ``memory``: ``/servers`` builds a large response in memory (each server's manifest,
  fetched from the downstream one call at a time) on a ``Depends(get_db)`` session
  held the whole time; requests pile up, and with ``lab up --memory-limit`` the
  workers' cgroup reaches its limit and the kernel OOM-kills one (the seed incident's
  end). :mod:`profiler.lab.memory_routes`.

``held-await`` is the ``held`` router itself; ``fresh`` and ``fresh-overload``
the ``fresh`` router.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.middleware.base import BaseHTTPMiddleware

from profiler.lab.gateway import fresh, held, queries
from profiler.lab.gateway.auth import bearer_token, unauthorized
from profiler.lab.gateway.queries import Listed
from profiler.lab.gateway.runtime import RuntimeDep
from profiler.lab.gateway.schemas import (  # held.py's and fresh.py's: these routes replace theirs
    InvokeRequest,
    PageQuery,
    PromptRead,
    ResourceRead,
    ServerRead,
    ToolRead,
)
from profiler.lab.schema import Prompt, Resource, Server, Tool

SERIALISED_ROWS = 10000  # ORM rows per list response to validate and encode (a page, repeated)
STREAM_CHUNK_SECONDS = 0.03  # per row streamed: 50 rows, 1.5 s per response
SLOW_QUERY = text("SELECT pg_sleep(0.2)")  # the sync-db scenario's query, on the loop
WORK_QUERY = text("SELECT pg_sleep(0.2)")  # the auth-second-session invocation's work

Db = Annotated[Session, Depends(held.get_db)]
Page = Annotated[PageQuery, Query()]
Row = dict[str, Any]


def install(app: FastAPI, scenario: str) -> None:
    """Add ``scenario``'s routes (before the base router's, so they win) and middleware."""
    if scenario == "memory":
        from profiler.lab.memory_routes import memory

        app.include_router(memory)
    router = ROUTERS.get(scenario)
    if router is not None:
        app.include_router(router)
    if scenario == "middleware":
        app.add_middleware(BaseHTTPMiddleware, dispatch=audit_session)


# -- held-serialise --------------------------------------------------------------------------

serialise = APIRouter()


def _many(rows: Sequence[Listed]) -> list[Listed]:
    """The page repeated up to :data:`SERIALISED_ROWS` rows: a large response, one query."""
    return list(rows) * max(1, SERIALISED_ROWS // max(len(rows), 1))


# One handler a route, alike on purpose, as in held.py and fresh.py: the stacks, and so the
# Diagnosis, name the route's own function.
@serialise.get("/tools", response_model=list[ToolRead])
def list_tools_serialised(user: fresh.CurrentUser, db: Db, page: Page) -> list[Tool]:
    """ORM rows out of a session FastAPI closes only after serialising them."""
    return _many(queries.page(db, Tool, limit=page.limit, offset=page.offset))


@serialise.get("/servers", response_model=list[ServerRead])
def list_servers_serialised(user: fresh.CurrentUser, db: Db, page: Page) -> list[Server]:
    return _many(queries.page(db, Server, limit=page.limit, offset=page.offset))


@serialise.get("/resources", response_model=list[ResourceRead])
def list_resources_serialised(user: fresh.CurrentUser, db: Db, page: Page) -> list[Resource]:
    return _many(queries.page(db, Resource, limit=page.limit, offset=page.offset))


@serialise.get("/prompts", response_model=list[PromptRead])
def list_prompts_serialised(user: fresh.CurrentUser, db: Db, page: Page) -> list[Prompt]:
    return _many(queries.page(db, Prompt, limit=page.limit, offset=page.offset))


# -- middleware ------------------------------------------------------------------------------


async def audit_session(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """An audit middleware as gateways write them: its session opens before the request and
    commits after it, so its connection is idle in transaction for the whole request."""
    if request.url.path == "/health":
        return await call_next(request)
    db = request.app.state.runtime.sessions()
    try:
        db.execute(text("SELECT 1"))  # autobegin: this connection is now in a transaction
        response = await call_next(request)
        db.commit()
        return response
    finally:
        db.close()


# -- auth-second-session ---------------------------------------------------------------------

second = APIRouter()


def authenticate_own_session(
    db: Annotated[Session, Depends(held.get_auth_db)],
    authorization: Annotated[str | None, Header()] = None,
) -> Row:
    """Its own session (FastAPI caches by callable), held until the response is sent."""
    user = queries.user_for_token(db, bearer_token(authorization))
    if user is None:
        raise unauthorized("unknown or revoked token")
    return queries.as_dict(user)


AuthUser = Annotated[Row, Depends(authenticate_own_session)]


@second.get("/tools")
def list_tools_second(user: AuthUser, db: Db, page: Page) -> list[Row]:
    rows = queries.page(db, Tool, limit=page.limit, offset=page.offset)
    return [queries.as_dict(row) for row in rows]


@second.post("/tools/{tool_id}/invoke")
def invoke_tool_second(tool_id: int, body: InvokeRequest, user: AuthUser, db: Db) -> Row:
    """No downstream call: the work is a query, so nothing but the second session holds."""
    tool = queries.get_tool(db, tool_id)
    if tool is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no tool {tool_id}")
    db.execute(WORK_QUERY)
    return {"tool": queries.as_dict(tool), "arguments": body.arguments}


# -- sync-db ---------------------------------------------------------------------------------

sync_db = APIRouter()


@sync_db.get("/tools")
async def list_tools_sync(user: fresh.CurrentUser, runtime: RuntimeDep, page: Page) -> list[Row]:
    """A short session, but its slow query runs on the event loop."""
    with fresh.fresh_db_session(runtime.sessions) as db:
        db.execute(SLOW_QUERY)
        rows = queries.page(db, Tool, limit=page.limit, offset=page.offset)
        return [queries.as_dict(row) for row in rows]


@sync_db.post("/tools/{tool_id}/invoke")
async def invoke_tool_sync(
    tool_id: int, body: InvokeRequest, user: fresh.CurrentUser, runtime: RuntimeDep
) -> Row:
    with fresh.fresh_db_session(runtime.sessions) as db:
        db.execute(SLOW_QUERY)
        tool = queries.get_tool(db, tool_id)
        if tool is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no tool {tool_id}")
        return {"tool": queries.as_dict(tool), "arguments": body.arguments}


# -- streaming -------------------------------------------------------------------------------

streaming = APIRouter()


def _streamed(rows: Sequence[Any]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        for row in rows:  # ORM rows of the still-open session
            yield json.dumps(queries.as_dict(row), default=str) + "\n"
            await asyncio.sleep(STREAM_CHUNK_SECONDS)

    return StreamingResponse(body(), media_type="application/x-ndjson")


@streaming.get("/servers")
async def list_servers_streamed(user: fresh.CurrentUser, db: Db, page: Page) -> StreamingResponse:
    return _streamed(queries.page(db, Server, limit=page.limit, offset=page.offset))


@streaming.get("/resources")
async def list_resources_streamed(user: fresh.CurrentUser, db: Db, page: Page) -> StreamingResponse:
    return _streamed(queries.page(db, Resource, limit=page.limit, offset=page.offset))


@streaming.get("/prompts")
async def list_prompts_streamed(user: fresh.CurrentUser, db: Db, page: Page) -> StreamingResponse:
    return _streamed(queries.page(db, Prompt, limit=page.limit, offset=page.offset))


ROUTERS: dict[str, APIRouter] = {
    "held-serialise": serialise,
    "auth-second-session": second,
    "sync-db": sync_db,
    "streaming": streaming,
}
