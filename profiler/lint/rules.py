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
on the way to the session, following calls into the project's own functions):

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

import ast
import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass

from profiler.lint.model import (
    DOWNSTREAM,
    KIND_ORDER,
    SERIALISATION,
    SLEEP,
    SLOW_CALL,
    STREAMING,
    Endpoint,
    Finding,
    Reason,
)
from profiler.lint.project import FunctionNode, Module, Project, Resolved, dotted, terminal
from profiler.lint.routes import Route, RouteTable

DEFAULT_SESSION_DEPENDENCIES = ("get_db", "get_session", "get_async_session", "get_db_session")
DEFAULT_SLOW_CALLS = (
    "requests.*",
    "time.sleep",
    "subprocess.*",
    "urllib.request.urlopen",
    "httpx.get",
    "httpx.post",
    "httpx.put",
    "httpx.patch",
    "httpx.delete",
    "httpx.head",
    "httpx.options",
    "httpx.request",
    "httpx.stream",
)
DEFAULT_MAX_DEPTH = 6

HTTP_METHODS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "request", "send", "stream"}
    | {"ws_connect", "fetch"}
)
SLEEPS = frozenset({"asyncio.sleep", "anyio.sleep", "trio.sleep"})
GATHERS = frozenset(
    {"asyncio.gather", "asyncio.wait_for", "asyncio.shield", "asyncio.wait", "asyncio.timeout"}
)
THREAD_RUNNERS = frozenset(
    {
        "asyncio.to_thread",
        "anyio.to_thread.run_sync",
        "starlette.concurrency.run_in_threadpool",
        "fastapi.concurrency.run_in_threadpool",
    }
)
ASYNC_CLIENT_TYPES = frozenset({"httpx.AsyncClient", "aiohttp.ClientSession"})
SYNC_CLIENT_TYPES = frozenset({"httpx.Client", "requests.Session", "requests.sessions.Session"})
SESSION_TYPES = frozenset(
    {"Session", "AsyncSession", "scoped_session", "async_scoped_session", "Connection"}
    | {"AsyncConnection"}
)
STREAMING_RESPONSES = frozenset({"StreamingResponse", "EventSourceResponse"})
ORM_BASES = frozenset({"DeclarativeBase", "DeclarativeBaseNoMeta", "Base", "Model", "AsyncAttrs"})
MODEL_BASES = frozenset({"BaseModel", "TypedDict", "NamedTuple"})
PLAIN_TYPES = frozenset(
    {"dict", "Dict", "Mapping", "MutableMapping", "str", "int", "float", "bool", "bytes", "None"}
    | {"Any", "object", "Decimal", "datetime", "date", "UUID", "list", "List", "Sequence"}
    | {"tuple", "Tuple", "Iterable", "Optional", "Union", "set", "frozenset", "Literal"}
)
SESSION_NOT_ORM_METHODS = frozenset(
    {"commit", "flush", "rollback", "close", "add", "add_all", "delete", "refresh", "expunge"}
    | {"begin", "begin_nested", "count", "exists", "mappings", "tuples", "execute_many"}
)
_PLAIN_CALL = re.compile(
    r"(?i)(dict|dump|json|serial|count|exists|^len$|^str$|^int$|^bool$|^float$|"
    r"model_validate|from_orm|parse_obj|Response$)"
)
_CLIENT_NAME = re.compile(r"(?i)(^|_)(https?|client|downstream|upstream|httpx|aiohttp)($|_)")
_SESSION_OPENER = re.compile(r"(?i)session")
_NOT_SESSION = re.compile(r"(?i)client|http")


@dataclass(frozen=True, slots=True)
class Settings:
    """What counts as a session dependency and as a slow call; how far calls are followed."""

    session_dependencies: tuple[str, ...] = DEFAULT_SESSION_DEPENDENCIES
    slow_calls: tuple[str, ...] = DEFAULT_SLOW_CALLS
    max_depth: int = DEFAULT_MAX_DEPTH


@dataclass(frozen=True, slots=True)
class Chain:
    """How a parameter leads to a session: the dependency names, outermost first."""

    names: tuple[str, ...]
    functions: tuple[tuple[Module, FunctionNode] | None, ...]
    scope: str | None
    line: int
    param: str | None


@dataclass(frozen=True, slots=True)
class Effect:
    """Something slow a function does, possibly through calls: its kind, how, and where."""

    kind: str
    detail: str
    where: str
    hops: int


@dataclass(frozen=True, slots=True)
class _Hit:
    """One piece of slow work found in a body: ``where`` is set when it is in another
    function (the innermost place), ``hops`` counts the calls followed to it."""

    kind: str
    detail: str
    where: str | None = None
    hops: int = 0

    def text(self) -> str:
        return f"{self.detail} ({self.where})" if self.where else self.detail


@dataclass(frozen=True, slots=True)
class _Dependency:
    param: str | None
    line: int
    module: Module
    target: ast.expr
    scope: str | None


class Analyzer:
    """The rules over one project; memoised per function so 3,000 handlers take seconds."""

    def __init__(self, project: Project, table: RouteTable, settings: Settings) -> None:
        self.project = project
        self.table = table
        self.settings = settings
        self.session_names = frozenset(settings.session_dependencies)
        self._chains: dict[int, list[tuple[tuple[str, ...], tuple[Any_, ...]]]] = {}
        self._effects: dict[int, list[Effect]] = {}
        self._busy_chains: set[int] = set()
        self._busy_effects: set[int] = set()

    # -- one handler -----------------------------------------------------------------------

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
        for dependency in self._parameter_dependencies(route.module, route.function):
            for names, functions in self._chains_for(dependency.module, dependency.target):
                chains.append(
                    Chain(names, functions, dependency.scope, dependency.line, dependency.param)
                )
        declared = [*route.dependencies, *self.table.router_dependencies(route)]
        for entry in declared:
            target = _depends_target(entry.call)
            if target is None:
                continue
            for names, functions in self._chains_for(entry.module, target):
                line = entry.line if entry.module is route.module else route.function.lineno
                chains.append(Chain(names, functions, _scope(entry.call), line, None))
        return chains

    def _held_reasons(self, route: Route, chains: list[Chain]) -> list[Reason]:
        module, function = route.module, route.function
        reasons = [
            Reason(hit.kind, line, hit.text()) for line, hit, _ in self._scan(module, function)
        ]
        for chain in chains:
            for index, entry in enumerate(chain.functions[:-1]):
                if entry is None:
                    continue
                for effect in self._function_effects(*entry):
                    reasons.append(
                        Reason(
                            effect.kind,
                            chain.line,
                            f"dependency {chain.names[index]}: {effect.detail} ({effect.where})",
                        )
                    )
        session_vars = {c.param for c in chains if c.param and len(c.names) == 1}
        streaming_holds = any(c.scope != "function" for c in chains)
        reasons.extend(self._return_reasons(route, session_vars, streaming=streaming_holds))
        return reasons

    def _block_reasons(
        self, module: Module, function: FunctionNode
    ) -> tuple[list[Reason], list[str]]:
        """The fixed pattern's check: slow work inside a short-lived session block is flagged."""
        reasons: list[Reason] = []
        blocks: list[str] = []
        for line, hit, block in self._scan(module, function, blocks_only=True):
            reasons.append(Reason(hit.kind, line, hit.text()))
            if block not in blocks:
                blocks.append(block)
        return reasons, blocks

    # -- dependencies ----------------------------------------------------------------------

    def _parameter_dependencies(self, module: Module, function: FunctionNode) -> list[_Dependency]:
        """Each ``Depends``/``Security`` a parameter declares, by default or ``Annotated``."""
        args = function.args
        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        defaults += list(args.defaults)
        pairs = [
            *zip(positional, defaults, strict=True),
            *zip(args.kwonlyargs, args.kw_defaults, strict=True),
        ]
        found: list[_Dependency] = []
        for arg, default in pairs:
            if isinstance(default, ast.Call) and terminal(default.func) in ("Depends", "Security"):
                target = _depends_target(default)
                if target is None and arg.annotation is not None:
                    target = _strip_annotated(arg.annotation)
                if target is not None:
                    found.append(_Dependency(arg.arg, arg.lineno, module, target, _scope(default)))
                continue
            if arg.annotation is not None:
                for where, target, scope in self._annotation_depends(module, arg.annotation, 0):
                    found.append(_Dependency(arg.arg, arg.lineno, where, target, scope))
        return found

    def _annotation_depends(
        self, module: Module, annotation: ast.expr, depth: int
    ) -> list[tuple[Module, ast.expr, str | None]]:
        """``Annotated[T, Depends(x)]``, directly or through aliases (``Db``), across modules."""
        if depth > 8:
            return []
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            parsed = _parse_annotation(annotation.value)
            return [] if parsed is None else self._annotation_depends(module, parsed, depth + 1)
        if isinstance(annotation, ast.Subscript) and terminal(annotation.value) == "Annotated":
            elements = (
                annotation.slice.elts
                if isinstance(annotation.slice, ast.Tuple)
                else [annotation.slice]
            )
            found: list[tuple[Module, ast.expr, str | None]] = []
            for meta in elements[1:]:
                if isinstance(meta, ast.Call) and terminal(meta.func) in ("Depends", "Security"):
                    target = _depends_target(meta) or elements[0]
                    found.append((module, target, _scope(meta)))
            return found
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            return self._annotation_depends(
                module, annotation.left, depth + 1
            ) + self._annotation_depends(module, annotation.right, depth + 1)
        if isinstance(annotation, ast.Name | ast.Attribute):
            alias = self.project.resolve_expr(module, annotation)
            if alias is not None and alias.kind == "value" and alias.value is not None:
                assert alias.module is not None
                return self._annotation_depends(alias.module, alias.value, depth + 1)
        return []

    def _chains_for(
        self, module: Module, target: ast.expr
    ) -> list[tuple[tuple[str, ...], tuple[Any_, ...]]]:
        """The session chains a dependency leads to (empty: it holds no session)."""
        name = terminal(target.func if isinstance(target, ast.Call) else target)
        if name in self.session_names:
            found = self.project.resolve_expr(module, target)
            entry = _entry(found)
            return [((name,), (entry,))]
        callee = target.func if isinstance(target, ast.Call) else target
        found = self.project.resolve_expr(module, callee)
        if found is None or found.module is None:
            return []
        function = found.function
        if found.klass is not None:
            method = "__call__" if isinstance(target, ast.Call) else "__init__"
            function = _method(found.klass, method)
        if function is None:
            return []
        key = id(function)
        if key in self._chains:
            return self._chains[key]
        if key in self._busy_chains:
            return []
        self._busy_chains.add(key)
        try:
            label = found.name or function.name
            entry = (found.module, function)
            result: list[tuple[tuple[str, ...], tuple[Any_, ...]]] = []
            if self._provides_session(found.module, function):
                result.append(((label,), (entry,)))
            else:
                for dependency in self._parameter_dependencies(found.module, function):
                    for names, functions in self._chains_for(dependency.module, dependency.target):
                        result.append(((label, *names), (entry, *functions)))
        finally:
            self._busy_chains.discard(key)
        self._chains[key] = result
        return result

    def _provides_session(self, module: Module, function: FunctionNode) -> bool:
        """Annotated to return or yield a session type, or yields a session it opened."""
        if function.returns is not None and _mentions(function.returns, SESSION_TYPES):
            return True
        opened: set[str] = set()
        yields: list[ast.expr] = []
        for node in _own_nodes(function.body):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                if self._opens_session(module, node.value):
                    opened.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    if (
                        isinstance(item.context_expr, ast.Call)
                        and self._opens_session(module, item.context_expr)
                        and isinstance(item.optional_vars, ast.Name)
                    ):
                        opened.add(item.optional_vars.id)
            elif isinstance(node, ast.Yield) and node.value is not None:
                yields.append(node.value)
        return any(
            (isinstance(v, ast.Name) and v.id in opened)
            or (isinstance(v, ast.Call) and self._opens_session(module, v))
            for v in yields
        )

    def _opens_session(self, module: Module, call: ast.Call) -> bool:
        """A call that opens a session or connection: ``SessionLocal()``, ``Session(engine)``,
        ``runtime.sessions()``, ``fresh_db_session()``, ``engine.connect()/begin()``."""
        name = terminal(call.func)
        if _SESSION_OPENER.search(name) and not _NOT_SESSION.search(name):
            return True
        if name in ("connect", "begin") and isinstance(call.func, ast.Attribute):
            return "engine" in (dotted(call.func.value) or "").lower()
        return False

    # -- the handler's body ----------------------------------------------------------------

    def _scan(
        self, module: Module, function: FunctionNode, *, blocks_only: bool = False
    ) -> list[tuple[int, _Hit, str]]:
        """(line, hit, block) of the slow work in a body; ``blocks_only``: only inside
        short-lived session blocks (``block`` names the block)."""
        clients, sync_clients = self._clients(module, function)
        found: list[tuple[int, _Hit, str]] = []
        awaited: set[int] = set()
        for node, block in self._walk(module, function.body, blocks_only):
            if blocks_only and block is None:
                continue
            item: _Hit | None = None
            if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
                awaited.add(id(node.value))
                item = self._awaited(module, node.value, clients, awaited)
            elif isinstance(node, ast.AsyncWith):
                for with_item in node.items:
                    context = with_item.context_expr
                    if isinstance(context, ast.Call):
                        awaited.add(id(context))
                        if self._is_http_call(module, context, clients):
                            item = _Hit(DOWNSTREAM, f"async with {_short(context)}")
            elif isinstance(node, ast.Call) and id(node) not in awaited:
                item = self._called(module, node, sync_clients)
            if item is not None:
                found.append((getattr(node, "lineno", function.lineno), item, block or ""))
        return found

    def _walk(
        self, module: Module, body: list[ast.stmt], blocks: bool
    ) -> Iterator[tuple[ast.AST, str | None]]:
        """Every node of a body (not of nested functions or classes), with the short-lived
        session block it is in, when ``blocks`` asks for them."""
        stack: list[tuple[ast.AST, str | None]] = [(node, None) for node in reversed(body)]
        while stack:
            node, block = stack.pop()
            yield node, block
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue
            inner = block
            if blocks and block is None and isinstance(node, ast.With | ast.AsyncWith):
                opener = next(
                    (
                        item.context_expr
                        for item in node.items
                        if isinstance(item.context_expr, ast.Call)
                        and self._opens_session(module, item.context_expr)
                    ),
                    None,
                )
                if opener is not None:
                    keyword = "async with" if isinstance(node, ast.AsyncWith) else "with"
                    inner = f"{keyword} {_short(opener)} (line {node.lineno})"
                    for item in node.items:
                        stack.append((item, block))
                    stack.extend((child, inner) for child in reversed(node.body))
                    continue
            stack.extend((child, inner) for child in reversed(list(ast.iter_child_nodes(node))))

    def _awaited(  # noqa: PLR0911 - one return per kind of awaited call, checked in order
        self, module: Module, call: ast.Call, clients: set[str], awaited: set[int]
    ) -> _Hit | None:
        qualified = self.project.qualified_name(module, call.func)
        if qualified in SLEEPS:
            return _Hit(SLEEP, f"await {qualified}(...)")
        if qualified in GATHERS:
            for argument in call.args:
                if isinstance(argument, ast.Call):
                    awaited.add(id(argument))
                    inner = self._awaited(module, argument, clients, awaited)
                    if inner is not None:
                        detail = f"await {qualified}({inner.detail.removeprefix('await ')})"
                        return _Hit(inner.kind, detail, inner.where, inner.hops)
            return None
        if qualified in THREAD_RUNNERS or terminal(call.func) == "run_in_executor":
            position = 1 if terminal(call.func) == "run_in_executor" else 0
            if len(call.args) > position:
                slow = self._slow_callable(module, call.args[position])
                if slow is not None:
                    return _Hit(SLOW_CALL, f"await {qualified}({slow})")
            return None
        if self._is_http_call(module, call, clients):
            return _Hit(DOWNSTREAM, f"await {_short(call)}")
        found = self.project.resolve_expr(module, call.func)
        if found is not None and found.function is not None and found.module is not None:
            effect = _worst(self._function_effects(found.module, found.function))
            if effect is not None:
                detail = f"await {_short(call)} -> {effect.detail}"
                return _Hit(effect.kind, detail, effect.where, effect.hops + 1)
        return None

    def _called(self, module: Module, call: ast.Call, sync_clients: set[str]) -> _Hit | None:
        slow = self._slow_callable(module, call.func)
        if slow is not None:
            return _Hit(SLOW_CALL, f"{slow}(...)")
        if (
            isinstance(call.func, ast.Attribute)
            and call.func.attr in HTTP_METHODS
            and (dotted(call.func.value) or "") in sync_clients
        ):
            return _Hit(SLOW_CALL, _short(call))
        found = self.project.resolve_expr(module, call.func)
        if (
            found is not None
            and isinstance(found.function, ast.FunctionDef)
            and found.module is not None
        ):
            effects = self._function_effects(found.module, found.function)
            effect = _worst([e for e in effects if e.kind == SLOW_CALL])
            if effect is not None:
                detail = f"{_short(call)} -> {effect.detail}"
                return _Hit(SLOW_CALL, detail, effect.where, effect.hops + 1)
        return None

    def _slow_callable(self, module: Module, expr: ast.expr) -> str | None:
        """The qualified name of a configured slow helper (classes and exceptions excluded)."""
        if not isinstance(expr, ast.Name | ast.Attribute):
            return None
        qualified = self.project.qualified_name(module, expr)
        last = qualified.rpartition(".")[2]
        if not qualified or last[:1].isupper():
            return None
        for pattern in self.settings.slow_calls:
            if fnmatch.fnmatchcase(qualified, pattern):
                return qualified
        return None

    def _is_http_call(self, module: Module, call: ast.Call, clients: set[str]) -> bool:
        """A method of an HTTP client: a name typed or built as one, or named like one."""
        if not (isinstance(call.func, ast.Attribute) and call.func.attr in HTTP_METHODS):
            return False
        receiver = call.func.value
        name = dotted(receiver) or ""
        if name in clients:
            return True
        if _CLIENT_NAME.search(terminal(receiver)):
            return True
        found = self.project.resolve_expr(module, receiver)
        if found is not None and isinstance(found.value, ast.Call) and found.module is not None:
            built = self.project.qualified_name(found.module, found.value.func)
            return built in ASYNC_CLIENT_TYPES or built in SYNC_CLIENT_TYPES
        return False

    def _clients(self, module: Module, function: FunctionNode) -> tuple[set[str], set[str]]:
        """Names typed or built as HTTP clients in a function: (all clients, blocking ones)."""
        async_clients: set[str] = set()
        sync_clients: set[str] = set()

        def note(name: str, kind: str) -> None:
            if kind in ASYNC_CLIENT_TYPES:
                async_clients.add(name)
            elif kind in SYNC_CLIENT_TYPES:
                sync_clients.add(name)

        for arg in [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]:
            if arg.annotation is not None:
                for node in ast.walk(arg.annotation):
                    if isinstance(node, ast.Name | ast.Attribute):
                        note(arg.arg, self.project.qualified_name(module, node))
        for node in _own_nodes(function.body):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                kind = self.project.qualified_name(module, node.value.func)
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        note(target.id, kind)
            elif isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    context = item.context_expr
                    if isinstance(context, ast.Call) and isinstance(item.optional_vars, ast.Name):
                        note(
                            item.optional_vars.id,
                            self.project.qualified_name(module, context.func),
                        )
        return async_clients | sync_clients, sync_clients

    def _function_effects(self, module: Module, function: FunctionNode) -> list[Effect]:
        """The slow work of a project function, following its calls (memoised, cycle-safe)."""
        key = id(function)
        if key in self._effects:
            return self._effects[key]
        if key in self._busy_effects:
            return []
        self._busy_effects.add(key)
        try:
            effects: list[Effect] = []
            for line, hit, _ in self._scan(module, function):
                where = hit.where or f"{module.rel}:{line}"
                if hit.hops < self.settings.max_depth and all(e.kind != hit.kind for e in effects):
                    effects.append(Effect(hit.kind, hit.detail, where, hit.hops))
        finally:
            self._busy_effects.discard(key)
        self._effects[key] = effects
        return effects

    # -- what the handler returns ----------------------------------------------------------

    def _return_reasons(
        self, route: Route, session_vars: set[str], *, streaming: bool
    ) -> list[Reason]:
        module, function = route.module, route.function
        reasons: list[Reason] = []
        env = self._orm_names(module, function, session_vars)
        streams = self._stream_names(function)
        response_class = route.keywords.get("response_class")
        if (
            streaming
            and response_class is not None
            and terminal(response_class) in STREAMING_RESPONSES
        ):
            reasons.append(
                Reason(
                    STREAMING,
                    function.lineno,
                    f"response_class={terminal(response_class)}: the session stays open "
                    "while the response streams",
                )
            )
        serialises = self._serialises(route)
        for node in _own_nodes(function.body):
            if not isinstance(node, ast.Return) or node.value is None:
                continue
            value = node.value
            stream = _stream_of(value, streams)
            if stream is not None:
                if streaming:
                    reasons.append(
                        Reason(
                            STREAMING,
                            node.lineno,
                            f"returns {stream}: the session stays open while it streams",
                        )
                    )
                continue
            if serialises:
                orm = self._orm(module, value, env, session_vars)
                if orm is not None:
                    reasons.append(
                        Reason(
                            SERIALISATION,
                            node.lineno,
                            f"returns {orm}: ORM objects serialised by the response model "
                            "after the handler returns, session still open",
                        )
                    )
        return reasons

    def _serialises(self, route: Route) -> bool:
        """FastAPI serialises the return value: a ``response_model``, or a return annotation
        that is not a ``Response``."""
        model = route.keywords.get("response_model")
        if model is not None:
            return not (isinstance(model, ast.Constant) and model.value is None)
        returns = route.function.returns
        if returns is None or (isinstance(returns, ast.Constant) and returns.value is None):
            return False
        return not terminal(returns).endswith("Response")

    def _stream_names(self, function: FunctionNode) -> dict[str, str]:
        names: dict[str, str] = {}
        for node in _own_nodes(function.body):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                name = terminal(node.value.func)
                if name in STREAMING_RESPONSES:
                    names.update((t.id, name) for t in node.targets if isinstance(t, ast.Name))
        return names

    def _orm_names(
        self, module: Module, function: FunctionNode, session_vars: set[str]
    ) -> dict[str, str]:
        """Local names bound to ORM results (two passes, so ``b = a`` after ``a = db.get()``)."""
        env: dict[str, str] = {}
        for _ in range(2):
            for node in _own_nodes(function.body):
                targets: list[ast.expr] = []
                value: ast.expr | None = None
                if isinstance(node, ast.Assign):
                    targets, value = list(node.targets), node.value
                elif isinstance(node, ast.AnnAssign) and node.value is not None:
                    targets, value = [node.target], node.value
                elif isinstance(node, ast.For | ast.AsyncFor):
                    targets, value = [node.target], node.iter
                if value is None:
                    continue
                orm = self._orm(module, value, env, session_vars)
                if orm is None:
                    continue
                for target in targets:
                    if isinstance(target, ast.Name):
                        env.setdefault(target.id, orm)
        return env

    def _orm(  # noqa: PLR0911 - one return per expression shape
        self, module: Module, expr: ast.expr, env: dict[str, str], session_vars: set[str]
    ) -> str | None:
        """A short description if ``expr`` is (or contains) ORM objects, else None.

        ORM: a query method of the session (``db.get``, ``db.scalars(...).all()``), a
        call that passes the session to a function not annotated to return plain data,
        an ORM class built, or a name bound to any of these; containers of them.
        """
        if isinstance(expr, ast.Await):
            return self._orm(module, expr.value, env, session_vars)
        if isinstance(expr, ast.Name):
            bound = env.get(expr.id)
            return None if bound is None else f"{expr.id} (from {bound})"
        if isinstance(expr, ast.Dict):
            values: list[ast.expr] = list(expr.values)
            return next((d for v in values if (d := self._orm(module, v, env, session_vars))), None)
        if isinstance(expr, ast.List | ast.Tuple | ast.Set):
            return next(
                (d for v in expr.elts if (d := self._orm(module, v, env, session_vars))), None
            )
        if isinstance(expr, ast.IfExp):
            return self._orm(module, expr.body, env, session_vars) or self._orm(
                module, expr.orelse, env, session_vars
            )
        if isinstance(expr, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            inner = dict(env)
            for generator in expr.generators:
                orm = self._orm(module, generator.iter, inner, session_vars)
                if orm is not None and isinstance(generator.target, ast.Name):
                    inner[generator.target.id] = orm
            return self._orm(module, expr.elt, inner, session_vars)
        if isinstance(expr, ast.Call):
            return self._orm_call(module, expr, env, session_vars)
        return None

    def _orm_call(  # noqa: PLR0911 - one return per way a call yields (or not) ORM objects
        self, module: Module, call: ast.Call, env: dict[str, str], session_vars: set[str]
    ) -> str | None:
        name = terminal(call.func)
        if _PLAIN_CALL.search(name):
            return None
        if isinstance(call.func, ast.Attribute):
            receiver = call.func.value
            if isinstance(receiver, ast.Name) and receiver.id in session_vars:
                return None if name in SESSION_NOT_ORM_METHODS else _short(call)
            if isinstance(receiver, ast.Call | ast.Await):
                if self._orm(module, receiver, env, session_vars) is not None:
                    return None if name in SESSION_NOT_ORM_METHODS else _short(call)
            elif isinstance(receiver, ast.Name) and receiver.id in env:
                return None if name in SESSION_NOT_ORM_METHODS else _short(call)
        found = self.project.resolve_expr(module, call.func)
        if found is not None and found.klass is not None and found.module is not None:
            return _short(call) if self._class_kind(found.module, found.klass) == "orm" else None
        arguments = [*call.args, *(k.value for k in call.keywords)]
        if not any(isinstance(a, ast.Name) and a.id in session_vars for a in arguments):
            return None
        if (
            found is not None
            and found.function is not None
            and found.module is not None
            and self._returns_plain(found.module, found.function.returns)
        ):
            return None
        return _short(call)

    def _returns_plain(self, module: Module, annotation: ast.expr | None, depth: int = 0) -> bool:
        """Annotated to return plain data: builtins, dicts, pydantic models (through aliases)."""
        if annotation is None or depth > 6:
            return False
        if isinstance(annotation, ast.Constant):
            if isinstance(annotation.value, str):
                parsed = _parse_annotation(annotation.value)
                return parsed is not None and self._returns_plain(module, parsed, depth + 1)
            return annotation.value is None
        for node in ast.walk(annotation):
            if isinstance(node, ast.Attribute) or (
                isinstance(node, ast.Name) and not _inside_attribute(node, annotation)
            ):
                name = terminal(node)
                if name in PLAIN_TYPES:
                    continue
                found = self.project.resolve_expr(module, node)
                if found is not None and found.module is not None:
                    if (
                        found.kind == "value"
                        and found.value is not None
                        and self._returns_plain(found.module, found.value, depth + 1)
                    ):
                        continue
                    if (
                        found.klass is not None
                        and self._class_kind(found.module, found.klass) == "model"
                    ):
                        continue
                if isinstance(node, ast.Name) and name in ("typing", "collections", "abc"):
                    continue
                return False
        return True

    def _class_kind(  # noqa: PLR0911 - one return per tell-tale of a mapped or plain class
        self, module: Module, klass: ast.ClassDef, depth: int = 0
    ) -> str:
        """``orm`` (a mapped class), ``model`` (pydantic and friends) or ``unknown``."""
        if depth > 8:
            return "unknown"
        for statement in klass.body:
            if isinstance(statement, ast.Assign | ast.AnnAssign):
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                )
                if any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in targets):
                    return "orm"
        for keyword in klass.keywords:
            if keyword.arg == "table" and isinstance(keyword.value, ast.Constant):
                return "orm" if keyword.value.value else "model"
        for base in klass.bases:
            name = terminal(base)
            if name in ORM_BASES:
                return "orm"
            if name in MODEL_BASES or name == "SQLModel":
                return "model"
            found = self.project.resolve_expr(module, base)
            if found is not None and found.klass is not None and found.module is not None:
                kind = self._class_kind(found.module, found.klass, depth + 1)
                if kind != "unknown":
                    return kind
        return "unknown"


Any_ = tuple[Module, FunctionNode] | None


def _entry(found: Resolved | None) -> Any_:
    if found is not None and found.function is not None and found.module is not None:
        return (found.module, found.function)
    return None


def _method(klass: ast.ClassDef, name: str) -> FunctionNode | None:
    for statement in klass.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) and statement.name == name:
            return statement
    return None


def _depends_target(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    for keyword in call.keywords:
        if keyword.arg == "dependency":
            return keyword.value
    return None


def _scope(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "scope" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def _strip_annotated(annotation: ast.expr) -> ast.expr:
    if isinstance(annotation, ast.Subscript) and terminal(annotation.value) == "Annotated":
        inner = annotation.slice
        return inner.elts[0] if isinstance(inner, ast.Tuple) else inner
    return annotation


def _parse_annotation(text: str) -> ast.expr | None:
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError:
        return None


def _mentions(annotation: ast.expr, names: frozenset[str]) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        parsed = _parse_annotation(annotation.value)
        return parsed is not None and _mentions(parsed, names)
    return any(
        isinstance(node, ast.Name | ast.Attribute) and terminal(node) in names
        for node in ast.walk(annotation)
    )


def _inside_attribute(node: ast.Name, root: ast.expr) -> bool:
    return any(
        isinstance(parent, ast.Attribute) and parent.value is node for parent in ast.walk(root)
    )


def _own_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of a body, not descending into nested functions, lambdas or classes."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _stream_of(value: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(value, ast.Call) and terminal(value.func) in STREAMING_RESPONSES:
        return terminal(value.func)
    if isinstance(value, ast.Name):
        return names.get(value.id)
    return None


def _worst(effects: list[Effect]) -> Effect | None:
    ranked = sorted(effects, key=lambda e: (KIND_ORDER.index(e.kind), e.hops))
    return ranked[0] if ranked else None


def _short(call: ast.Call) -> str:
    """``http.post(...)``: the callee as written, arguments elided."""
    callee = dotted(call.func)
    if callee is None:
        text = ast.unparse(call.func)
        callee = text if len(text) <= 60 else text[:57] + "..."
    return f"{callee}(...)"
