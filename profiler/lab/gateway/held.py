"""The incident: sessions that live as long as the request.

Written the way the incident's gateway was, from the FastAPI tutorial pattern:

* ``get_db`` and ``get_auth_db`` are generator dependencies; FastAPI closes
  them only after the response has been sent, so each session's connection
  stays checked out for the whole request;
* the authentication dependency has its own session, so a request holds two
  connections;
* the handlers are ``async def`` but query through a synchronous ``Session``: a
  checkout that finds the pool empty blocks the event loop for up to
  ``pool_timeout``, and with it every other request of the worker;
* the first query autobegins a transaction, so during the downstream ``await``
  both connections sit ``idle in transaction``;
* handlers return ORM objects, serialised by FastAPI through the
  ``response_model`` after the handler returns, still inside the sessions (and,
  after a commit, reloading the expired rows on a connection checked out again).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from sqlalchemy.orm import Session

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
from profiler.lab.schema import Prompt, Resource, Server, Tool, User

router = APIRouter()  # fresh.py's imports, routes and models: only the session lifetime differs


def get_db(runtime: RuntimeDep) -> Iterator[Session]:
    db = runtime.sessions()
    try:
        yield db
    finally:
        db.close()


def get_auth_db(runtime: RuntimeDep) -> Iterator[Session]:
    """A second, separate session: FastAPI caches dependencies by callable, not by type."""
    db = runtime.sessions()
    try:
        yield db
    finally:
        db.close()


def authenticate(
    db: Annotated[Session, Depends(get_auth_db)],
    authorization: Annotated[str | None, Header()] = None,
) -> Iterator[User]:
    """A sync generator, as the incident's was: FastAPI runs it, and later its exit, in threads.

    Its query leaves the auth session's connection ``idle in transaction``
    until ``get_auth_db`` closes it after the response.
    """
    user = queries.user_for_token(db, bearer_token(authorization))
    if user is None:
        raise unauthorized("unknown or revoked token")
    yield user


Db = Annotated[Session, Depends(get_db)]
CurrentUser = Annotated[User, Depends(authenticate)]
Page = Annotated[PageQuery, Query()]


@router.get("/tools", response_model=list[ToolRead])  # one per route, as the incident's gateway
async def list_tools(user: CurrentUser, db: Db, page: Page) -> Sequence[Tool]:
    return queries.page(db, Tool, limit=page.limit, offset=page.offset)


@router.get("/servers", response_model=list[ServerRead])
async def list_servers(user: CurrentUser, db: Db, page: Page) -> Sequence[Server]:
    return queries.page(db, Server, limit=page.limit, offset=page.offset)


@router.get("/resources", response_model=list[ResourceRead])
async def list_resources(user: CurrentUser, db: Db, page: Page) -> Sequence[Resource]:
    return queries.page(db, Resource, limit=page.limit, offset=page.offset)


@router.get("/prompts", response_model=list[PromptRead])
async def list_prompts(user: CurrentUser, db: Db, page: Page) -> Sequence[Prompt]:
    return queries.page(db, Prompt, limit=page.limit, offset=page.offset)


@router.get("/tools/{tool_id}", response_model=ToolRead)
async def get_tool(tool_id: int, user: CurrentUser, db: Db) -> Tool:
    return _tool_or_404(db, tool_id)


@router.post("/tools/{tool_id}/invoke", response_model=InvokeRead)
async def invoke_tool(
    tool_id: int, body: InvokeRequest, user: CurrentUser, db: Db, runtime: RuntimeDep
) -> dict[str, object]:
    tool = _tool_or_404(db, tool_id)  # autobegin: this connection is now idle in transaction
    call = await call_tool(runtime.http, tool.name, body.arguments)  # ...for all of this await
    invocation = queries.record_invocation(db, tool_id=tool.id, user_id=user.id, call=call)
    db.commit()  # expires tool and invocation: serialising them reloads both
    if call.failed:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail=call.result)
    return {"tool": tool, "invocation": invocation}


# fresh.py's, but returning the ORM row: serialised after the handler, its session still open.
def _tool_or_404(db: Session, tool_id: int) -> Tool:
    tool = queries.get_tool(db, tool_id)
    if tool is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no tool {tool_id}")
    return tool
