"""The gateway's engine and sessions, built the way the incident's gateway built them.

One engine per worker process: gunicorn forks workers, and a pool created
before the fork would share sockets between processes. The lifespan calls
these, so each worker builds its own pool after it starts.
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from profiler.lab.settings import GatewaySettings

# How the profiler (and the tests) tell the gateway's backends from everyone else's.
APPLICATION_NAME = "lab-gateway"


def create_db_engine(settings: GatewaySettings) -> Engine:
    """A plain ``QueuePool`` of ``pool_size + max_overflow`` connections for this worker.

    No ``pool_pre_ping``: it would add a round trip per checkout and hide
    nothing the lab wants hidden. A checkout that finds the pool empty waits up
    to ``pool_timeout`` seconds, then raises ``sqlalchemy.exc.TimeoutError``.
    """
    return create_engine(
        settings.dsn,
        poolclass=QueuePool,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_pre_ping=False,
        connect_args={
            "application_name": APPLICATION_NAME,
            # psycopg prepares a statement run 5 times; None never does (PgBouncer
            # transaction pooling moves a session across server connections).
            **({} if settings.prepared_statements else {"prepare_threshold": None}),
        },
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """The ``SessionLocal`` of a typical FastAPI app.

    ``expire_on_commit`` stays at its default (True), as in most gateways: after
    a commit, reading an attribute reloads the row, which in held mode means the
    response serialiser checks a connection out again.
    """
    return sessionmaker(bind=engine, autoflush=False, expire_on_commit=True)
