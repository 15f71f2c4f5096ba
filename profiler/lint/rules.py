"""Which handlers hold a DB session, and what they do while it is open.

The incident's shape: a handler gets a session from a generator dependency
(``Depends(get_db)``), FastAPI keeps it open until the response has been
sent, and meanwhile the handler awaits a downstream call, streams, or returns
ORM objects that are serialised (and lazily reloaded) after it returns. A
grep for ``Depends(get_db)`` finds the first half; these rules find the
second, statically, in CI. Every heuristic here is listed in
``docs/reference/lint.md``; this module's functions say which one they are.

A handler holds a session when one of its parameters (or a ``dependencies=[...]``
entry on the route, router or ``include_router``) depends, directly or through
other dependencies, on:

* a callable named like a session dependency (``get_db``, ... configurable);
* a project function annotated to return or yield a session type
  (``Iterator[Session]``, ``AsyncIterator[AsyncSession]``, ``-> Session``);
* a project generator that yields a session it opened (``yield SessionLocal()``,
  ``with Session(engine) as s: yield s``).

While it is held, the rules look for (in the handler and in the dependencies
on the way to the session, following calls into the project's own functions and,
through the receivers' types, into service methods in other modules: see
:mod:`profiler.lint.calls`):

* ``downstream-await``: ``await`` of an HTTP client method (``client.get``,
  ``http.post``, ``session.get`` on an ``aiohttp.ClientSession``) or of a
  project function that does one;
* ``sleep``: ``await asyncio.sleep`` (anyio, trio);
* ``slow-call``: a blocking slow helper (``requests.*``, ``time.sleep``,
  ``subprocess.*``, ... configurable), directly or in a project function;
* ``streaming``: a ``StreamingResponse``/``EventSourceResponse`` returned;
* ``serialisation``: ORM objects returned for the response model.

A handler without a session dependency is checked for the fixed pattern: its
short-lived session blocks (``with fresh_db_session() as db``, ``async with
SessionLocal() as db``, ``with Session(engine) as db``) must not contain the
slow work; an await inside such a block is flagged, one after it is not.
"""

from __future__ import annotations

from profiler.lint.model import KIND_ORDER, SESSIONS, Endpoint, Finding, Reason
from profiler.lint.project import FunctionNode, Module, Project
from profiler.lint.returns import Returns
from profiler.lint.routes import Route, RouteTable
from profiler.lint.sessions import Chain, Sessions
from profiler.lint.settings import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_SESSION_DEPENDENCIES,
    DEFAULT_SLOW_CALLS,
    Settings,
)
from profiler.lint.slow import SlowWork
from profiler.lint.syntax import depends_scope, depends_target

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_SESSION_DEPENDENCIES",
    "DEFAULT_SLOW_CALLS",
    "Analyzer",
    "Settings",
]


class Analyzer:
    """The rules over one project; memoised per function so 3,000 handlers take seconds."""

    def __init__(self, project: Project, table: RouteTable, settings: Settings) -> None:
        self.project = project
        self.table = table
        self.settings = settings
        self.sessions = Sessions(project, settings)
        self.slow = SlowWork(project, settings)
        self.returns = Returns(project)

    def analyse(self, route: Route) -> tuple[Endpoint, Finding | None]:
        module, function = route.module, route.function
        chains = self._handler_chains(route)
        routes = tuple(self.table.full_paths(route))
        if chains:
            reasons = self._held_reasons(route, chains)
            dependencies = tuple(dict.fromkeys(" -> ".join(c.names) for c in chains))
        else:
            reasons, blocks = self._block_reasons(module, function)
            dependencies = tuple(blocks)
        endpoint = Endpoint(
            module.rel, function.lineno, function.name, routes, dependencies if chains else ()
        )
        if not reasons:
            return endpoint, None
        ordered = tuple(
            sorted(set(reasons), key=lambda r: (r.line, KIND_ORDER.index(r.kind), r.detail))
        )
        return endpoint, Finding(
            module.rel,
            function.lineno,
            function.name,
            routes,
            dependencies,
            ordered,
            function.col_offset + 1,
        )

    def _handler_chains(self, route: Route) -> list[Chain]:
        chains: list[Chain] = []
        for dependency in self.sessions.parameter_dependencies(route.module, route.function):
            for names, functions in self.sessions.chains_for(dependency.module, dependency.target):
                chains.append(
                    Chain(names, functions, dependency.scope, dependency.line, dependency.param)
                )
        declared = [*route.dependencies, *self.table.router_dependencies(route)]
        for entry in declared:
            target = depends_target(entry.call)
            if target is None:
                continue
            for names, functions in self.sessions.chains_for(entry.module, target):
                line = entry.line if entry.module is route.module else route.function.lineno
                chains.append(Chain(names, functions, depends_scope(entry.call), line, None))
        return chains

    def _held_reasons(self, route: Route, chains: list[Chain]) -> list[Reason]:
        module, function = route.module, route.function
        reasons = [
            Reason(hit.kind, line, hit.text()) for line, hit, _ in self.slow.scan(module, function)
        ]
        for chain in chains:
            for index, entry in enumerate(chain.functions[:-1]):
                if entry is None:
                    continue
                for effect in self.slow.function_effects(*entry):
                    reasons.append(
                        Reason(
                            effect.kind,
                            chain.line,
                            f"dependency {chain.names[index]}: {effect.detail} ({effect.where})",
                        )
                    )
        session_vars = {c.param for c in chains if c.param and len(c.names) == 1}
        streaming_holds = any(c.scope != "function" for c in chains)
        reasons.extend(self.returns.reasons(route, session_vars, streaming=streaming_holds))
        reasons.extend(_sessions_per_request(route, chains))
        return reasons

    def _block_reasons(
        self, module: Module, function: FunctionNode
    ) -> tuple[list[Reason], list[str]]:
        """The fixed pattern's check: slow work inside a short-lived session block is flagged."""
        reasons: list[Reason] = []
        blocks: list[str] = []
        for line, hit, block in self.slow.scan(module, function, blocks_only=True):
            reasons.append(Reason(hit.kind, line, hit.text()))
            if block not in blocks:
                blocks.append(block)
        return reasons, blocks


def _sessions_per_request(route: Route, chains: list[Chain]) -> list[Reason]:
    """Two or more different session dependencies in one request's graph.

    FastAPI runs a dependency once per request per *callable* (``use_cache``), so
    ``get_db`` reached from the handler and from ``get_current_user`` is one session,
    while ``get_db`` and ``get_auth_db`` (or two modules' ``get_db``) are two, each
    holding its own connection once it has queried.
    """
    sources: dict[object, Chain] = {}
    for chain in chains:
        last = chain.functions[-1]
        key: object = id(last[1]) if last is not None else chain.names[-1]
        sources.setdefault(key, chain)
    count = len(sources)
    if count < 2:
        return []
    parts = ", ".join(" -> ".join(c.names) for c in sources.values())
    return [
        Reason(
            SESSIONS,
            route.function.lineno,
            f"each request takes {count} sessions at once ({parts}): "
            f"a pool of 10 serves at most {10 // count} such requests at once",
        )
    ]
