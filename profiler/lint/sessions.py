"""Which dependencies give a handler a DB session: the chains from a parameter to ``get_db``."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from profiler.lint.project import (
    FunctionMemo,
    FunctionNode,
    Module,
    Project,
    Resolved,
    terminal,
)
from profiler.lint.settings import Settings
from profiler.lint.syntax import (
    depends_scope,
    depends_target,
    mentions,
    method,
    opens_session,
    own_nodes,
    parse_annotation,
    strip_annotated,
)

SESSION_TYPES = frozenset(
    {"Session", "AsyncSession", "scoped_session", "async_scoped_session", "Connection"}
    | {"AsyncConnection"}
)

ChainEntry = tuple[Module, FunctionNode] | None


@dataclass(frozen=True, slots=True)
class Chain:
    """How a parameter leads to a session: the dependency names, outermost first."""

    names: tuple[str, ...]
    functions: tuple[tuple[Module, FunctionNode] | None, ...]
    scope: str | None
    line: int
    param: str | None


@dataclass(frozen=True, slots=True)
class Dependency:
    param: str | None
    line: int
    module: Module
    target: ast.expr
    scope: str | None


class Sessions:
    """Session chains of dependencies, memoised per function and cycle-safe."""

    def __init__(self, project: Project, settings: Settings) -> None:
        self.project = project
        self.session_names = frozenset(settings.session_dependencies)
        self._chains: FunctionMemo[list[tuple[tuple[str, ...], tuple[ChainEntry, ...]]]] = (
            FunctionMemo(list)
        )

    def parameter_dependencies(self, module: Module, function: FunctionNode) -> list[Dependency]:
        """Each ``Depends``/``Security`` a parameter declares, by default or ``Annotated``."""
        args = function.args
        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        defaults += list(args.defaults)
        pairs = [
            *zip(positional, defaults, strict=True),
            *zip(args.kwonlyargs, args.kw_defaults, strict=True),
        ]
        found: list[Dependency] = []
        for arg, default in pairs:
            if isinstance(default, ast.Call) and terminal(default.func) in ("Depends", "Security"):
                target = depends_target(default)
                if target is None and arg.annotation is not None:
                    target = strip_annotated(arg.annotation)
                if target is not None:
                    found.append(
                        Dependency(arg.arg, arg.lineno, module, target, depends_scope(default))
                    )
                continue
            if arg.annotation is not None:
                for where, target, scope in self._annotation_depends(module, arg.annotation, 0):
                    found.append(Dependency(arg.arg, arg.lineno, where, target, scope))
        return found

    def _annotation_depends(
        self, module: Module, annotation: ast.expr, depth: int
    ) -> list[tuple[Module, ast.expr, str | None]]:
        """``Annotated[T, Depends(x)]``, directly or through aliases (``Db``), across modules."""
        if depth > 8:
            return []
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            parsed = parse_annotation(annotation.value)
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
                    target = depends_target(meta) or elements[0]
                    found.append((module, target, depends_scope(meta)))
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

    def chains_for(
        self, module: Module, target: ast.expr
    ) -> list[tuple[tuple[str, ...], tuple[ChainEntry, ...]]]:
        """The session chains a dependency leads to (empty: it holds no session)."""
        name = terminal(target.func if isinstance(target, ast.Call) else target)
        if name in self.session_names:
            found = self.project.resolve_expr(module, target)
            entry = chain_entry(found)
            return [((name,), (entry,))]
        callee = target.func if isinstance(target, ast.Call) else target
        found = self.project.resolve_expr(module, callee)
        if found is None or found.module is None:
            return []
        function = found.function
        if found.klass is not None:
            dunder = "__call__" if isinstance(target, ast.Call) else "__init__"
            function = method(found.klass, dunder)
        if function is None:
            return []
        module, label = found.module, found.name or function.name
        return self._chains.get(function, lambda: self._chains_through(module, function, label))

    def _chains_through(
        self, module: Module, function: FunctionNode, label: str
    ) -> list[tuple[tuple[str, ...], tuple[ChainEntry, ...]]]:
        entry = (module, function)
        result: list[tuple[tuple[str, ...], tuple[ChainEntry, ...]]] = []
        if self.provides_session(module, function):
            result.append(((label,), (entry,)))
        else:
            for dependency in self.parameter_dependencies(module, function):
                for names, functions in self.chains_for(dependency.module, dependency.target):
                    result.append(((label, *names), (entry, *functions)))
        return result

    def provides_session(self, module: Module, function: FunctionNode) -> bool:
        """Annotated to return or yield a session type, or yields a session it opened."""
        if function.returns is not None and mentions(function.returns, SESSION_TYPES):
            return True
        opened: set[str] = set()
        yields: list[ast.expr] = []
        for node in own_nodes(function.body):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                if opens_session(node.value):
                    opened.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    if (
                        isinstance(item.context_expr, ast.Call)
                        and opens_session(item.context_expr)
                        and isinstance(item.optional_vars, ast.Name)
                    ):
                        opened.add(item.optional_vars.id)
            elif isinstance(node, ast.Yield) and node.value is not None:
                yields.append(node.value)
        if self.yields_inside_session_block(function):
            return True
        return any(
            (isinstance(v, ast.Name) and v.id in opened)
            or (isinstance(v, ast.Call) and opens_session(v))
            for v in yields
        )

    @staticmethod
    def yields_inside_session_block(function: FunctionNode) -> bool:
        """``with SessionLocal() as db: ...; yield user``: the session stays open while the
        request runs, even though the dependency gives the handler something else."""
        for node in own_nodes(function.body):
            if (
                isinstance(node, ast.With | ast.AsyncWith)
                and any(
                    isinstance(item.context_expr, ast.Call) and opens_session(item.context_expr)
                    for item in node.items
                )
                and any(isinstance(inner, ast.Yield) for inner in own_nodes(node.body))
            ):
                return True
        return False


def chain_entry(found: Resolved | None) -> ChainEntry:
    if found is not None and found.function is not None and found.module is not None:
        return (found.module, found.function)
    return None
