"""Syntax-tree helpers the lint rules share: walking a body, reading ``Depends``, naming calls."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from profiler.lint.project import FunctionNode, dotted, terminal

_SESSION_OPENER = re.compile(r"(?i)session")
_NOT_SESSION = re.compile(r"(?i)client|http")


def opens_session(call: ast.Call) -> bool:
    """A call that opens a session or connection: ``SessionLocal()``, ``Session(engine)``,
    ``runtime.sessions()``, ``fresh_db_session()``, ``engine.connect()/begin()``."""
    name = terminal(call.func)
    if _SESSION_OPENER.search(name) and not _NOT_SESSION.search(name):
        return True
    if name in ("connect", "begin") and isinstance(call.func, ast.Attribute):
        return "engine" in (dotted(call.func.value) or "").lower()
    return False


def method(klass: ast.ClassDef, name: str) -> FunctionNode | None:
    for statement in klass.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) and statement.name == name:
            return statement
    return None


def depends_target(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    for keyword in call.keywords:
        if keyword.arg == "dependency":
            return keyword.value
    return None


def depends_scope(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "scope" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def strip_annotated(annotation: ast.expr) -> ast.expr:
    if isinstance(annotation, ast.Subscript) and terminal(annotation.value) == "Annotated":
        inner = annotation.slice
        return inner.elts[0] if isinstance(inner, ast.Tuple) else inner
    return annotation


def parse_annotation(text: str) -> ast.expr | None:
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError:
        return None


def mentions(annotation: ast.expr, names: frozenset[str]) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        parsed = parse_annotation(annotation.value)
        return parsed is not None and mentions(parsed, names)
    return any(
        isinstance(node, ast.Name | ast.Attribute) and terminal(node) in names
        for node in ast.walk(annotation)
    )


def inside_attribute(node: ast.Name, root: ast.expr) -> bool:
    return any(
        isinstance(parent, ast.Attribute) and parent.value is node for parent in ast.walk(root)
    )


def own_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of a body, not descending into nested functions, lambdas or classes."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def short(call: ast.Call) -> str:
    """``http.post(...)``: the callee as written, arguments elided."""
    callee = dotted(call.func)
    if callee is None:
        text = ast.unparse(call.func)
        callee = text if len(text) <= 60 else text[:57] + "..."
    return f"{callee}(...)"
