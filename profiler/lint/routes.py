"""Where the routes are: FastAPI apps, APIRouters, their prefixes and their handlers.

A route is found from its declaration, never by running the app:

* decorators ``@X.get/.post/.put/.patch/.delete/.head/.options/.trace(path)``,
  ``@X.api_route(path, methods=[...])`` and ``@X.websocket(path)``;
* calls ``X.add_api_route(path, endpoint, methods=[...])`` and
  ``X.add_api_websocket_route(path, endpoint)``;

where ``X`` is assigned from ``FastAPI(...)`` or ``APIRouter(...)`` (or a
call whose name ends in ``Router``), in this module or imported from another
one of PATH. A receiver that cannot be resolved still counts when its name
says app or router (``app``, ``router``, ``users_router``, ``api``).

Prefixes: ``APIRouter(prefix=...)`` and every ``include_router(child,
prefix=...)`` chain up to the app; a router included twice has two routes.
Dependencies declared on the router, on ``include_router`` or on the
decorator (``dependencies=[Depends(get_db)]``) are kept with the route:
they hold a session as a parameter would.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from profiler.lint.project import FunctionNode, Module, Project, terminal

ROUTE_METHODS = {
    "get": ("GET",),
    "post": ("POST",),
    "put": ("PUT",),
    "patch": ("PATCH",),
    "delete": ("DELETE",),
    "head": ("HEAD",),
    "options": ("OPTIONS",),
    "trace": ("TRACE",),
    "websocket": ("WEBSOCKET",),
    "api_route": ("GET",),
}
ADD_ROUTE = {"add_api_route": ("GET",), "add_api_websocket_route": ("WEBSOCKET",)}
_ROUTER_CALL = re.compile(r"(FastAPI|Router|Starlette)$")
_ROUTER_NAME = re.compile(r"(?i)(^|_)(app|api|router|application)($|_)|router$")

RouterKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RouteDependency:
    """A ``Depends(...)`` declared on a route, router or include, with where to resolve it."""

    module: Module
    call: ast.Call
    line: int


@dataclass(slots=True)
class Router:
    key: RouterKey
    prefix: str = ""
    dependencies: list[RouteDependency] = field(default_factory=list)
    parents: list[tuple[RouterKey | None, str, list[RouteDependency]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Route:
    """One handler as declared: its function, methods, path, router and declared options."""

    module: Module
    function: FunctionNode
    methods: tuple[str, ...]
    path: str
    router: RouterKey | None
    keywords: dict[str, ast.expr]
    dependencies: tuple[RouteDependency, ...]


@dataclass(slots=True)
class RouteTable:
    routes: list[Route]
    routers: dict[RouterKey, Router]

    def full_paths(self, route: Route) -> list[str]:
        """``METHOD /prefix/path`` for every way the route's router is mounted."""
        prefixes = self._prefixes(route.router, set()) if route.router else [""]
        return sorted(
            {f"{method} {prefix}{route.path}" for prefix in prefixes for method in route.methods}
        )

    def router_dependencies(self, route: Route) -> list[RouteDependency]:
        """Dependencies of the route's router and of every include above it."""
        found: list[RouteDependency] = []
        self._collect(route.router, found, set())
        return found

    def _prefixes(self, key: RouterKey | None, seen: set[RouterKey]) -> list[str]:
        router = self.routers.get(key) if key else None
        if router is None or key in seen:
            return [""]
        seen = seen | {router.key}
        if not router.parents:
            return [router.prefix]
        return [
            f"{outer}{include_prefix}{router.prefix}"
            for parent, include_prefix, _ in router.parents
            for outer in self._prefixes(parent, seen)
        ]

    def _collect(
        self, key: RouterKey | None, found: list[RouteDependency], seen: set[RouterKey]
    ) -> None:
        router = self.routers.get(key) if key else None
        if router is None or router.key in seen:
            return
        seen.add(router.key)
        found.extend(router.dependencies)
        for parent, _, dependencies in router.parents:
            found.extend(dependencies)
            self._collect(parent, found, seen)


def find_routes(project: Project) -> RouteTable:
    """Every route of every module, and the routers they hang on."""
    table = RouteTable([], {})
    for module in project.modules:
        _find_routers(project, module, table)
    for module in project.modules:
        _find_in_module(project, module, table)
    return table


def _find_routers(project: Project, module: Module, table: RouteTable) -> None:
    for name, value in {**module.local_values, **module.values}.items():
        if isinstance(value, ast.Call) and _ROUTER_CALL.search(terminal(value.func)):
            key = (module.name, name)
            table.routers[key] = Router(
                key,
                _string(project, module, _keyword(value, "prefix")),
                _dependencies(module, _keyword(value, "dependencies")),
            )


def _find_in_module(project: Project, module: Module, table: RouteTable) -> None:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                route = _decorated(project, module, node, decorator, table)
                if route is not None:
                    table.routes.append(route)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in ADD_ROUTE:
                route = _added(project, module, node, table)
                if route is not None:
                    table.routes.append(route)
            elif attr == "include_router" and node.args:
                _include(project, module, node, table)


def _decorated(
    project: Project,
    module: Module,
    function: FunctionNode,
    decorator: ast.expr,
    table: RouteTable,
) -> Route | None:
    if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)):
        return None
    method = decorator.func.attr
    if method not in ROUTE_METHODS:
        return None
    receiver = decorator.func.value
    key = _router_key(project, module, receiver, table)
    if key is None:
        return None
    path_expr = decorator.args[0] if decorator.args else _keyword(decorator, "path")
    if path_expr is None:
        return None
    methods: tuple[str, ...] = ROUTE_METHODS[method]
    if method == "api_route":
        methods = _methods(_keyword(decorator, "methods")) or methods
    keywords = {kw.arg: kw.value for kw in decorator.keywords if kw.arg}
    return Route(
        module,
        function,
        methods,
        _string(project, module, path_expr),
        key if key in table.routers else None,
        keywords,
        tuple(_dependencies(module, keywords.get("dependencies"))),
    )


def _added(project: Project, module: Module, call: ast.Call, table: RouteTable) -> Route | None:
    assert isinstance(call.func, ast.Attribute)
    key = _router_key(project, module, call.func.value, table)
    if key is None:
        return None
    args = list(call.args)
    path_expr = args[0] if args else _keyword(call, "path")
    endpoint_expr = args[1] if len(args) > 1 else _keyword(call, "endpoint")
    if path_expr is None or endpoint_expr is None:
        return None
    found = project.resolve_expr(module, endpoint_expr)
    if found is None or found.function is None or found.module is None:
        return None
    methods = _methods(_keyword(call, "methods")) or ADD_ROUTE[call.func.attr]
    keywords = {kw.arg: kw.value for kw in call.keywords if kw.arg}
    return Route(
        found.module,
        found.function,
        methods,
        _string(project, module, path_expr),
        key if key in table.routers else None,
        keywords,
        tuple(_dependencies(module, keywords.get("dependencies"))),
    )


def _include(project: Project, module: Module, call: ast.Call, table: RouteTable) -> None:
    assert isinstance(call.func, ast.Attribute)
    parent = _router_key(project, module, call.func.value, table)
    prefix = _string(project, module, _keyword(call, "prefix"))
    dependencies = _dependencies(module, _keyword(call, "dependencies"))
    children = call.args[0]
    options = [children.body, children.orelse] if isinstance(children, ast.IfExp) else [children]
    for child_expr in options:
        child = _router_key(project, module, child_expr, table)
        if child is None or child not in table.routers:
            continue
        table.routers[child].parents.append(
            (parent if parent in table.routers else None, prefix, dependencies)
        )


def _router_key(
    project: Project, module: Module, expr: ast.expr, table: RouteTable
) -> RouterKey | None:
    """The router an expression stands for; a plausible name resolves to a key of its own."""
    if isinstance(expr, ast.Name) and (module.name, expr.id) in table.routers:
        return (module.name, expr.id)
    found = project.resolve_expr(module, expr)
    if found is not None and found.kind == "value" and found.module is not None:
        key = (found.module.name, found.name)
        if key in table.routers:
            return key
    name = terminal(expr)
    if name and _ROUTER_NAME.search(name):
        return (module.name, name)
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _methods(expr: ast.expr | None) -> tuple[str, ...]:
    if isinstance(expr, ast.List | ast.Tuple | ast.Set):
        return tuple(
            sorted(
                str(e.value).upper()
                for e in expr.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
        )
    return ()


def _string(project: Project, module: Module, expr: ast.expr | None, depth: int = 0) -> str:
    """A path or prefix as written: constants, module-level string names, simple f-strings;
    anything else shows as ``{expression}``."""
    if expr is None:
        return ""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    if isinstance(expr, ast.JoinedStr):
        return "".join(
            _string(project, module, part.value if isinstance(part, ast.FormattedValue) else part)
            for part in expr.values
        )
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _string(project, module, expr.left, depth + 1) + _string(
            project, module, expr.right, depth + 1
        )
    if depth < 8 and isinstance(expr, ast.Name | ast.Attribute):
        found = project.resolve_expr(module, expr)
        if found is not None and found.value is not None and found.module is not None:
            return _string(project, found.module, found.value, depth + 1)
    return "{" + ast.unparse(expr) + "}"


def _dependencies(module: Module, expr: ast.expr | None) -> list[RouteDependency]:
    """The ``Depends(...)`` calls of a ``dependencies=[...]`` list."""
    if not isinstance(expr, ast.List | ast.Tuple):
        return []
    return [
        RouteDependency(module, element, element.lineno)
        for element in expr.elts
        if isinstance(element, ast.Call) and terminal(element.func) in ("Depends", "Security")
    ]
