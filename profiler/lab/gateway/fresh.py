"""The fix: short sessions, plain dicts out of them, nothing open across an ``await``.

Same endpoints, queries and response models as :mod:`~profiler.lab.gateway.held`;
only the session lifetime differs:

* every database touch is a ``with fresh_db_session(...)`` block that commits
  (or rolls back) and returns its connection to the pool when the block ends;
* rows become dicts inside the block, so nothing after it can lazy-load;
* the downstream call happens between two such blocks, with no connection
  checked out; the invocation row is written by the second;
* authentication uses its own short block and returns a dict.

The handlers still run synchronous queries on the event loop, as in held mode,
so the comparison isolates the session lifetime.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from sqlalchemy.orm import Session, sessionmaker

from profiler.lab.gateway import queries
from profiler.lab.gateway.auth import bearer_token, unauthorized
from profiler.lab.gateway.runtime import RuntimeDep
from profiler.lab.gateway.schemas import (
    InvokeRead,
    InvokeRequest,
    PageQuery,
    PromptRead,
    ResourceRead,
    ServerRead,
    ToolRead,
)
from profiler.lab.gateway.tool_calls import call_tool
from profiler.lab.schema import Prompt, Resource, Server, Tool

router = APIRouter()  # held.py's imports, routes and models: only the session lifetime differs

Row = dict[str, Any]


@contextmanager
def fresh_db_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction and connection end with the block, whatever happens in it."""
    with sessions() as db, db.begin():
        yield db


def authenticate(runtime: RuntimeDep, authorization: Annotated[str | None, Header()] = None) -> Row:
    token = bearer_token(authorization)
    with fresh_db_session(runtime.sessions) as db:
        user = queries.user_for_token(db, token)
        principal = None if user is None else queries.as_dict(user)
    if principal is None:
        raise unauthorized("unknown or revoked token")
    return principal


CurrentUser = Annotated[Row, Depends(authenticate)]
Page = Annotated[PageQuery, Query()]


@router.get("/tools", response_model=list[ToolRead])  # one per route as held.py's: compared by name
async def list_tools(user: CurrentUser, runtime: RuntimeDep, page: Page) -> list[Row]:
    with fresh_db_session(runtime.sessions) as db:
        rows = queries.page(db, Tool, limit=page.limit, offset=page.offset)
        return [queries.as_dict(row) for row in rows]


@router.get("/servers", response_model=list[ServerRead])
async def list_servers(user: CurrentUser, runtime: RuntimeDep, page: Page) -> list[Row]:
    with fresh_db_session(runtime.sessions) as db:
        rows = queries.page(db, Server, limit=page.limit, offset=page.offset)
        return [queries.as_dict(row) for row in rows]


@router.get("/resources", response_model=list[ResourceRead])
async def list_resources(user: CurrentUser, runtime: RuntimeDep, page: Page) -> list[Row]:
    with fresh_db_session(runtime.sessions) as db:
        rows = queries.page(db, Resource, limit=page.limit, offset=page.offset)
        return [queries.as_dict(row) for row in rows]


@router.get("/prompts", response_model=list[PromptRead])
async def list_prompts(user: CurrentUser, runtime: RuntimeDep, page: Page) -> list[Row]:
    with fresh_db_session(runtime.sessions) as db:
        rows = queries.page(db, Prompt, limit=page.limit, offset=page.offset)
        return [queries.as_dict(row) for row in rows]


@router.get("/tools/{tool_id}", response_model=ToolRead)
async def get_tool(tool_id: int, user: CurrentUser, runtime: RuntimeDep) -> Row:
    with fresh_db_session(runtime.sessions) as db:
        return _tool_or_404(db, tool_id)


@router.post("/tools/{tool_id}/invoke", response_model=InvokeRead)
async def invoke_tool(
    tool_id: int, body: InvokeRequest, user: CurrentUser, runtime: RuntimeDep
) -> dict[str, Row]:
    with fresh_db_session(runtime.sessions) as db:
        tool = _tool_or_404(db, tool_id)  # a dict, built before the block ends
    call = await call_tool(runtime.http, tool["name"], body.arguments)  # no connection held
    with fresh_db_session(runtime.sessions) as db:
        record = queries.record_invocation(db, tool_id=tool["id"], user_id=user["id"], call=call)
        invocation = queries.as_dict(record)
    if call.failed:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail=call.result)
    return {"tool": tool, "invocation": invocation}


# held.py's, but returning a dict, built inside the block: nothing can lazy-load after it.
def _tool_or_404(db: Session, tool_id: int) -> Row:
    tool = queries.get_tool(db, tool_id)
    if tool is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no tool {tool_id}")
    return queries.as_dict(tool)
