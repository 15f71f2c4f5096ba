"""Response models, shared by both modes so that their answers are byte-for-byte alike.

``from_attributes=True`` lets FastAPI validate ORM objects (held mode returns
them and FastAPI reads their attributes after the handler returns, inside the
still-open session) as well as plain dicts (fresh mode builds them before its
session closes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_PAGE = 500


class PageQuery(BaseModel):
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0)


class _FromRows(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ServerRead(_FromRows):
    id: int
    name: str
    url: str
    transport: str
    description: str
    capabilities: dict[str, Any]
    tags: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ToolRead(_FromRows):
    id: int
    server_id: int
    name: str
    display_name: str
    description: str
    integration_type: str
    request_type: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any]
    tags: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ResourceRead(_FromRows):
    id: int
    server_id: int
    uri: str
    name: str
    description: str
    mime_type: str
    size_bytes: int
    annotations: dict[str, Any]
    tags: list[str]
    created_at: datetime


class PromptRead(_FromRows):
    id: int
    server_id: int
    name: str
    description: str
    template: str
    arguments: list[dict[str, Any]]
    tags: list[str]
    created_at: datetime


class InvocationRead(_FromRows):
    id: int
    tool_id: int
    user_id: int
    started_at: datetime
    duration_ms: float
    status: str
    result: dict[str, Any]


class InvokeRead(_FromRows):
    tool: ToolRead
    invocation: InvocationRead


class InvokeRequest(BaseModel):
    arguments: dict[str, Any] = Field(default_factory=dict)
