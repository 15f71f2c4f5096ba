"""The gateway's application factory, loaded by each gunicorn worker.

gunicorn runs ``profiler.lab.gateway.app:create_app()`` in every worker, and
the engine and downstream client are created in the lifespan, so each worker
gets its own pool: N workers hold up to N * (pool_size + max_overflow)
connections.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from profiler.lab.gateway import fresh, held
from profiler.lab.gateway.runtime import lifespan
from profiler.lab.memory_cgroup import join_from_env
from profiler.lab.settings import GatewaySettings

logger = logging.getLogger(__name__)

_SQLALCHEMY_LINK = " (Background on this error"


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway in ``settings.mode``; settings default to the ``PROFILER_LAB_*`` environment."""
    settings = GatewaySettings.from_env() if settings is None else settings
    join_from_env()  # lab up --memory-limit: this worker into the limited cgroup
    app = FastAPI(
        title=f"profiler lab gateway ({settings.mode})",
        lifespan=lifespan(settings),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    if settings.scenario:
        from profiler.lab.scenario_routes import install

        install(app, settings.scenario)  # its routes first: they win over the base router's
    app.include_router(held.router if settings.mode == "held" else fresh.router)
    app.add_exception_handler(PoolTimeoutError, _pool_exhausted)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """No database: answers even when the pool is exhausted, like a liveness probe."""
        return {"status": "ok", "mode": settings.mode}

    return app


async def _pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    """What the incident's users saw: a 503 naming the pool, and one log line, not a traceback."""
    reason = str(exc).split(_SQLALCHEMY_LINK, 1)[0]
    logger.warning(
        "503 for %s %s: database connection pool exhausted: %s",
        request.method,
        request.url.path,
        reason,
    )
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": f"database connection pool exhausted: {reason}"},
        headers={"Retry-After": "1"},
    )
