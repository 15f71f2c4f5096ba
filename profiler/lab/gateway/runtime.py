"""What a worker holds for its whole life: settings, engine, sessions, downstream client.

Built in the lifespan, so it exists once per worker process (never in the
gunicorn master) and is torn down when the worker stops; handlers reach it
through :func:`get_runtime`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, cast

import httpx
from fastapi import Depends, FastAPI, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from profiler.lab.gateway.db import create_db_engine, session_factory
from profiler.lab.gateway.tool_calls import create_http_client
from profiler.lab.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: GatewaySettings
    engine: Engine
    sessions: sessionmaker[Session]
    http: httpx.AsyncClient


def lifespan(
    settings: GatewaySettings,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings)
        http = create_http_client(settings.downstream_url)
        app.state.runtime = Runtime(settings, engine, session_factory(engine), http)
        try:
            yield
        finally:
            await http.aclose()
            engine.dispose()

    return run


async def get_runtime(request: Request) -> Runtime:
    """``async`` so FastAPI calls it on the event loop, without a threadpool hop."""
    return cast(Runtime, request.app.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
