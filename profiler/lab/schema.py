"""The lab gateway's tables: a tool gateway's catalogue, its users, and its invocation log.

Shaped like an MCP gateway (servers expose tools, resources and prompts; users
call tools with API tokens) because that is where the incident happened: wide
rows with JSONB columns, so turning a page of them into JSON costs real CPU
while a session is open. Everything lives in its own PostgreSQL schema so that
pointing the lab at a user's database never touches their tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "profiler_lab"

JsonObject = dict[str, Any]


class Base(DeclarativeBase):
    """Binds every table to :data:`SCHEMA`, so DDL and queries never leave it."""

    metadata = MetaData(schema=SCHEMA)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute as is
        JsonObject: JSONB,
        list[str]: JSONB,
        list[JsonObject]: JSONB,
        datetime: DateTime(timezone=True),
    }


# One mapped class a table, alike in shape as declarations are (id, server_id, tags,
# created_at...): the columns, not logic, are what repeats, and each table keeps its own.
class Server(Base):
    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    transport: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text)
    capabilities: Mapped[JsonObject]
    tags: Mapped[list[str]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Tool(Base):
    __tablename__ = "tools"
    __table_args__ = (UniqueConstraint("server_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    integration_type: Mapped[str] = mapped_column(String(32))
    request_type: Mapped[str] = mapped_column(String(16))
    input_schema: Mapped[JsonObject]
    output_schema: Mapped[JsonObject | None]
    annotations: Mapped[JsonObject]
    tags: Mapped[list[str]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Resource(Base):
    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("server_id", "uri"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(String(500))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    mime_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    annotations: Mapped[JsonObject]
    tags: Mapped[list[str]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("server_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    template: Mapped[str] = mapped_column(Text)
    arguments: Mapped[list[JsonObject]]
    tags: Mapped[list[str]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    token: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime | None]


class ToolInvocation(Base):
    __tablename__ = "tool_invocations"
    __table_args__ = (Index("ix_tool_invocations_tool_started", "tool_id", "started_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tool_id: Mapped[int] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime]
    duration_ms: Mapped[float]
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[JsonObject]


TABLES: tuple[type[Base], ...] = (
    Server,
    Tool,
    Resource,
    Prompt,
    User,
    ApiToken,
    ToolInvocation,
)
