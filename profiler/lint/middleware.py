"""Middleware that holds a DB session while the rest of the request runs (``PRL006``).

The seed incident's second cause: an auth middleware opened a session, then
awaited ``call_next(request)`` with it still open, so every request held that
connection for its whole duration besides the one its handler took. Found here:

* ``BaseHTTPMiddleware`` subclasses (directly or through project bases): their
  ``dispatch(self, request, call_next)``;
* functions registered with ``@app.middleware("http")``: ``(request, call_next)``;
* pure ASGI middleware: ``async def __call__(self, scope, receive, send)`` that
  awaits ``self.app(...)``.

A session is open from a ``with``/``async with`` whose item opens one
(``SessionLocal()``, ``fresh_db_session()``, a project context manager that
provides one, a configured session dependency) to the end of that block, or
from ``db = SessionLocal()`` (or ``next(get_db())``, ``async for db in
get_db()``) to the first ``db.close()`` after it. An await of the next layer
inside that span is reported at the middleware.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from profiler.lint.model import CALL_NEXT, Finding, Reason
from profiler.lint.project import FunctionNode, Module, Project, terminal
from profiler.lint.sessions import Sessions
from profiler.lint.syntax import method, opens_session, own_nodes, short

MIDDLEWARE_BASES = frozenset({"BaseHTTPMiddleware"})
MAX_BASE_DEPTH = 8


@dataclass(frozen=True, slots=True)
class _Span:
    """Where a session is open in a body: its opener as written and the lines it covers."""

    opener: str
    start: int
    end: int


def middleware_findings(project: Project, sessions: Sessions) -> list[Finding]:
    """Every middleware of the project that awaits the next layer with a session open."""
    found: list[Finding] = []
    for module in project.modules:
        for label, function, next_layer in _middlewares(project, module):
            finding = _check(project, sessions, module, label, function, next_layer)
            if finding is not None:
                found.append(finding)
    return found


def _middlewares(project: Project, module: Module) -> Iterator[tuple[str, FunctionNode, str]]:
    """(label, function, how the next layer is called: a parameter name or ``self.app``)."""
    for klass in module.classes.values():
        if _is_http_middleware(project, module, klass, 0):
            dispatch = method(klass, "dispatch")
            if dispatch is not None:
                yield f"{klass.name}.dispatch", dispatch, _parameter(dispatch, 2, "call_next")
        call = method(klass, "__call__")
        if isinstance(call, ast.AsyncFunctionDef) and [a.arg for a in call.args.args[1:4]] == [
            "scope",
            "receive",
            "send",
        ]:
            yield f"{klass.name}.__call__", call, "self.app"
    for function in module.functions.values():
        for decorator in function.decorator_list:
            if (
                isinstance(decorator, ast.Call)
                and terminal(decorator.func) == "middleware"
                and decorator.args
                and isinstance(decorator.args[0], ast.Constant)
                and decorator.args[0].value == "http"
            ):
                yield function.name, function, _parameter(function, 1, "call_next")


def _is_http_middleware(project: Project, module: Module, klass: ast.ClassDef, depth: int) -> bool:
    if depth > MAX_BASE_DEPTH:
        return False
    for base in klass.bases:
        if terminal(base) in MIDDLEWARE_BASES:
            return True
        found = project.resolve_expr(module, base)
        if (
            found is not None
            and found.klass is not None
            and found.module is not None
            and _is_http_middleware(project, found.module, found.klass, depth + 1)
        ):
            return True
    return False


def _parameter(function: FunctionNode, index: int, default: str) -> str:
    positional = [*function.args.posonlyargs, *function.args.args]
    return positional[index].arg if len(positional) > index else default


def _check(
    project: Project,
    sessions: Sessions,
    module: Module,
    label: str,
    function: FunctionNode,
    next_layer: str,
) -> Finding | None:
    spans = list(_session_spans(project, sessions, module, function))
    if not spans:
        return None
    reasons: list[Reason] = []
    for node in own_nodes(function.body):
        if not (isinstance(node, ast.Await) and isinstance(node.value, ast.Call)):
            continue
        callee = ast.unparse(node.value.func)
        if callee != next_layer:
            continue
        for span in spans:
            if span.start <= node.lineno <= span.end:
                reasons.append(
                    Reason(
                        CALL_NEXT,
                        node.lineno,
                        f"await {short(node.value)} while {span.opener} (line {span.start}) "
                        "is open: every request holds this session besides its handler's",
                    )
                )
                break
    if not reasons:
        return None
    openers = tuple(dict.fromkeys(span.opener for span in spans))
    return Finding(
        module.rel,
        function.lineno,
        label,
        (),
        openers,
        tuple(sorted(set(reasons), key=lambda r: (r.line, r.detail))),
        function.col_offset + 1,
    )


def _session_spans(
    project: Project, sessions: Sessions, module: Module, function: FunctionNode
) -> Iterator[_Span]:
    end_of_function = max(
        (getattr(node, "end_lineno", None) or function.lineno for node in ast.walk(function)),
        default=function.lineno,
    )
    closes: dict[str, list[int]] = {}
    for node in own_nodes(function.body):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "close"
            and isinstance(node.func.value, ast.Name)
        ):
            closes.setdefault(node.func.value.id, []).append(node.lineno)
    for node in own_nodes(function.body):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                context = item.context_expr
                if isinstance(context, ast.Call) and _opens(project, sessions, module, context):
                    yield _Span(short(context), node.lineno, node.end_lineno or node.lineno)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            inner = call.args[0] if terminal(call.func) == "next" and call.args else call
            if isinstance(inner, ast.Call) and _opens(project, sessions, module, inner):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        after = [line for line in closes.get(target.id, []) if line > node.lineno]
                        end = min(after) if after else end_of_function
                        yield _Span(short(inner), node.lineno, end)
        elif (
            isinstance(node, ast.AsyncFor | ast.For)
            and isinstance(node.iter, ast.Call)
            and _opens(project, sessions, module, node.iter)
        ):
            yield _Span(short(node.iter), node.lineno, node.end_lineno or node.lineno)


def _opens(project: Project, sessions: Sessions, module: Module, call: ast.Call) -> bool:
    """A call that opens a session: by its name, a configured session dependency, or a
    project function that provides one (``get_db()``, ``@asynccontextmanager`` openers)."""
    if opens_session(call) or terminal(call.func) in sessions.session_names:
        return True
    found = project.resolve_expr(module, call.func)
    if found is not None and found.function is not None and found.module is not None:
        return sessions.provides_session(found.module, found.function)
    return False
