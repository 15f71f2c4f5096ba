"""What a handler returns while its session is open: streams, and ORM objects serialised later."""

from __future__ import annotations

import ast
import re

from profiler.lint.model import SERIALISATION, STREAMING, Reason
from profiler.lint.project import FunctionNode, Module, Project, terminal
from profiler.lint.routes import Route
from profiler.lint.syntax import inside_attribute, own_nodes, parse_annotation, short

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


class Returns:
    """The ``streaming`` and ``serialisation`` rules."""

    def __init__(self, project: Project) -> None:
        self.project = project

    def reasons(self, route: Route, session_vars: set[str], *, streaming: bool) -> list[Reason]:
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
        for node in own_nodes(function.body):
            if not isinstance(node, ast.Return) or node.value is None:
                continue
            value = node.value
            stream = stream_of(value, streams)
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
        for node in own_nodes(function.body):
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
            for node in own_nodes(function.body):
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
                return None if name in SESSION_NOT_ORM_METHODS else short(call)
            if isinstance(receiver, ast.Call | ast.Await):
                if self._orm(module, receiver, env, session_vars) is not None:
                    return None if name in SESSION_NOT_ORM_METHODS else short(call)
            elif isinstance(receiver, ast.Name) and receiver.id in env:
                return None if name in SESSION_NOT_ORM_METHODS else short(call)
        found = self.project.resolve_expr(module, call.func)
        if found is not None and found.klass is not None and found.module is not None:
            return short(call) if self.class_kind(found.module, found.klass) == "orm" else None
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
        return short(call)

    def _returns_plain(self, module: Module, annotation: ast.expr | None, depth: int = 0) -> bool:
        """Annotated to return plain data: builtins, dicts, pydantic models (through aliases)."""
        if annotation is None or depth > 6:
            return False
        if isinstance(annotation, ast.Constant):
            if isinstance(annotation.value, str):
                parsed = parse_annotation(annotation.value)
                return parsed is not None and self._returns_plain(module, parsed, depth + 1)
            return annotation.value is None
        for node in ast.walk(annotation):
            if isinstance(node, ast.Attribute) or (
                isinstance(node, ast.Name) and not inside_attribute(node, annotation)
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
                        and self.class_kind(found.module, found.klass) == "model"
                    ):
                        continue
                if isinstance(node, ast.Name) and name in ("typing", "collections", "abc"):
                    continue
                return False
        return True

    def class_kind(  # noqa: PLR0911 - one return per tell-tale of a mapped or plain class
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
                kind = self.class_kind(found.module, found.klass, depth + 1)
                if kind != "unknown":
                    return kind
        return "unknown"


def stream_of(value: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(value, ast.Call) and terminal(value.func) in STREAMING_RESPONSES:
        return terminal(value.func)
    if isinstance(value, ast.Name):
        return names.get(value.id)
    return None
