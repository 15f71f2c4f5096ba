"""Where a function has given its session's connection back: ``db.commit(); db.close()``.

SQLAlchemy returns a session's connection to the pool when its transaction
ends (``commit``, ``rollback``, ``close``) and checks one out again only on the
next query. A gateway that was fixed in place does exactly that before its slow
call (``db.commit(); db.close()`` and then ``await client.post(...)``), with the
request's ``Depends(get_db)`` session still "open": the await holds no
connection and must not be flagged.

The check is deliberately narrow, so a release on one branch never hides a
hold on another: a ``commit``/``rollback``/``close`` statement on a name that is
a session (a parameter annotated with a session type or named like one, ``db``,
``session``, ...) covers only the rest of the block it stands in (what runs
after it, nested blocks included), and only slow work with no mention of that
name between the release and it (a mention may query again).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from profiler.lint.project import FunctionNode
from profiler.lint.sessions import SESSION_TYPES
from profiler.lint.syntax import mentions, own_nodes

RELEASES = frozenset({"commit", "rollback", "close"})
SESSION_NAMES = frozenset({"db", "session", "db_session", "sess", "database", "dbsession"})


@dataclass(frozen=True, slots=True)
class Releases:
    """The release lines per session name, and every line that mentions each name."""

    released: dict[str, list[tuple[int, int]]]
    """Per session name: (release line, last line of the block it covers)."""
    mentioned: dict[str, list[int]]

    def holds_at(self, line: int) -> bool:
        """False when every session of the function was released before ``line`` and not
        touched again up to it."""
        if not self.released:
            return True
        for name, spans in self.released.items():
            before = [start for start, end in spans if start < line <= end]
            if not before:
                return True
            last = max(before)
            if any(last < m <= line for m in self.mentioned.get(name, [])):
                return True
        return False


def releases(function: FunctionNode) -> Releases:
    names = _session_names(function)
    released: dict[str, list[tuple[int, int]]] = {}
    receivers: set[int] = set()
    for block in _blocks(function):
        end = block[-1].end_lineno or block[-1].lineno
        for statement in block:
            if (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Call)
                and isinstance(statement.value.func, ast.Attribute)
                and statement.value.func.attr in RELEASES
                and isinstance(statement.value.func.value, ast.Name)
                and statement.value.func.value.id in names
            ):
                receiver = statement.value.func.value
                released.setdefault(receiver.id, []).append((statement.lineno, end))
                receivers.add(id(receiver))
    mentioned: dict[str, list[int]] = {}
    if released:
        for node in own_nodes(function.body):
            if isinstance(node, ast.Name) and node.id in released and id(node) not in receivers:
                mentioned.setdefault(node.id, []).append(node.lineno)
    return Releases(released, mentioned)


def _session_names(function: FunctionNode) -> set[str]:
    names: set[str] = set()
    args = function.args
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        if arg.arg in SESSION_NAMES or (
            arg.annotation is not None and mentions(arg.annotation, SESSION_TYPES)
        ):
            names.add(arg.arg)
    return names


def _blocks(function: FunctionNode) -> list[list[ast.stmt]]:
    """Every statement list of the function (its body, branches, loop and try bodies),
    not those of nested functions or classes."""
    blocks: list[list[ast.stmt]] = [function.body]
    for node in own_nodes(function.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        for field in ("body", "orelse", "finalbody"):
            value = getattr(node, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                blocks.append(value)
        for handler in getattr(node, "handlers", None) or []:  # try and try* (3.11)
            if isinstance(handler, ast.ExceptHandler) and handler.body:
                blocks.append(handler.body)
        if isinstance(node, ast.Match):
            blocks.extend(case.body for case in node.cases if case.body)
    return blocks
