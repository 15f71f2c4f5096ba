"""Every query the gateway runs, used unchanged by both modes.

Held and fresh differ only in how long the session around these calls lives
and in what leaves it (ORM objects or dicts); the SQL sent is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, inspect, or_, select
from sqlalchemy.orm import Session

from profiler.lab.gateway.tool_calls import ToolCall
from profiler.lab.schema import ApiToken, Base, Prompt, Resource, Server, Tool, ToolInvocation, User

Listed = TypeVar("Listed", Server, Tool, Resource, Prompt)


def page(db: Session, model: type[Listed], *, limit: int, offset: int) -> Sequence[Listed]:
    return db.scalars(select(model).order_by(model.id).limit(limit).offset(offset)).all()


def get_tool(db: Session, tool_id: int) -> Tool | None:
    return db.get(Tool, tool_id)


def user_for_token(db: Session, token: str) -> User | None:
    """The active user owning a valid token: one indexed join, as gateways do per request."""
    return db.scalars(
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(
            ApiToken.token == token,
            ApiToken.revoked.is_(False),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > func.now()),
            User.is_active.is_(True),
        )
    ).one_or_none()


def record_invocation(db: Session, *, tool_id: int, user_id: int, call: ToolCall) -> ToolInvocation:
    """Add the log row and flush, so its id exists before the caller copies or commits it."""
    invocation = ToolInvocation(
        tool_id=tool_id,
        user_id=user_id,
        started_at=call.started_at,
        duration_ms=call.duration_ms,
        status=call.status,
        result=call.result,
    )
    db.add(invocation)
    db.flush()
    return invocation


def as_dict(row: Base) -> dict[str, Any]:
    """The row's column values as a plain dict: what may outlive its session.

    Call it while the session is open: a freshly queried or flushed row has
    every column loaded, so this issues no SQL.
    """
    return {attr.key: getattr(row, attr.key) for attr in inspect(row).mapper.column_attrs}
