"""What a request was doing while it held a connection, from the stack it was held in.

The exact task ↔ backend join (:mod:`profiler.analysis.attribution`) gives, per
held transaction, the stacks of the task holding it and for how long. Each
stack falls in one class, in this order (the first that matches):

* ``middleware``: inside Starlette's ``BaseHTTPMiddleware.call_next``: a
  middleware holds a session while the rest of the request runs;
* ``streaming``: inside a ``StreamingResponse``: the session lives as long as
  the response streams;
* ``serialisation``: inside FastAPI's response serialisation
  (``serialize_response``, ``jsonable_encoder``) or a response's ``render``: the
  handler returned, its session (a yield dependency's) is still open;
* ``await``: an application frame awaiting something that is not the
  database (an HTTP call, a sleep, a queue): the slow operation the session
  was held across;
* ``database``: the application waiting on the database itself (a query):
  holding a connection for that is what connections are for;
* ``other``: anything else (resolving dependencies, a thread hop).

Pure: works on collapsed stack strings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from profiler.analysis.code_paths import CodePath, describe
from profiler.analysis.collapsed import frames as stack_frames
from profiler.analysis.collapsed import split_label

if TYPE_CHECKING:
    import pandas as pd

CLASSES = ("middleware", "streaming", "serialisation", "await", "database", "other")
DATABASE_PACKAGES = frozenset({"sqlalchemy", "psycopg", "psycopg2", "psycopg_pool", "asyncpg"})
SERIALISERS = frozenset(
    {
        "serialize_response",
        "_prepare_response_content",
        "jsonable_encoder",
        "JSONResponse.render",
        "ORJSONResponse.render",
        "UJSONResponse.render",
    }
)
STREAMERS = frozenset({"StreamingResponse.stream_response", "StreamingResponse.__call__"})


@lru_cache(maxsize=8192)
def classify(stack: str) -> str:
    """The class of a held stack (see the module docstring).

    >>> classify("endpoint GET /x (x);x (app.py:3);AsyncClient.post (httpx/_client.py:1859)")
    'await'
    >>> classify("x (app.py:3);Session.execute (sqlalchemy/orm/session.py:2300)")
    'database'
    >>> classify("BaseHTTPMiddleware.__call__.<locals>.call_next (starlette/middleware/base.py:9)")
    'middleware'
    """
    names = [split_label(label).name for label in stack_frames(stack)]
    if any(name.endswith("call_next") for name in names):
        return "middleware"
    if any(name in STREAMERS for name in names):
        return "streaming"
    if any(name in SERIALISERS or name.rsplit(".", 1)[-1] in SERIALISERS for name in names):
        return "serialisation"
    return _awaited(describe(stack))


def _awaited(path: CodePath) -> str:
    """``database``, ``await`` or ``other`` for a path in none of the framework's phases."""
    if not path.frames or path.downstream is None:
        return "other"
    if _package(split_label(path.downstream).file) in DATABASE_PACKAGES:
        return "database"
    return "await" if _package(split_label(path.frames[0]).file) is not None else "other"


def _package(file: str) -> str | None:
    """The top-level package of a label's file (``httpx`` for ``httpx/_client.py``)."""
    path = file.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    head = path.split("/", 1)[0]
    return head.removesuffix(".py") or None


@dataclass(slots=True)
class ClassHold:
    """Connection time held in one class: its total and its stacks, heaviest first."""

    millis: float = 0.0
    stacks: Counter[str] = field(default_factory=Counter)

    def top(self) -> CodePath | None:
        """The heaviest stack's code path (ties by stack text)."""
        if not self.stacks:
            return None
        stack = min(self.stacks.items(), key=lambda item: (-item[1], item[0]))[0]
        return describe(stack)


def held_by_class(per_episode: pd.DataFrame | None) -> dict[str, ClassHold]:
    """Task-attributed held time per class; the worker fallback (not the holder's) is left
    out. ``per_episode`` as :class:`~profiler.analysis.attribution.TaskAttribution` has it."""
    found: dict[str, ClassHold] = {}
    if per_episode is None or per_episode.empty:
        return found
    task = per_episode[(per_episode["kind"] == "task").to_numpy(dtype=bool)]
    for stack, millis in task.groupby("stack", observed=True)["millis"].sum().items():
        weight = float(millis)
        if weight <= 0:
            continue
        hold = found.setdefault(classify(str(stack)), ClassHold())
        hold.millis += weight
        hold.stacks[str(stack)] += round(weight)
    return found
