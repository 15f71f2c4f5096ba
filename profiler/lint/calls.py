"""Which function a call reaches, through service objects: ``self.tool_service.invoke_tool(...)``.

Gateways keep their slow HTTP calls in service classes in other modules, reached
through an attribute (``self.tool_service = ToolService()``), an annotated
parameter (``svc: ToolService = Depends(...)``) or a module-level singleton
(``tool_service = ToolService()``, imported elsewhere, or made lazily by a
module ``__getattr__``). A name alone does not say where ``invoke_tool`` lives;
the receiver's *type* does. Types are read, never inferred beyond these shapes:

* ``self``/``cls`` in a method: its class;
* a parameter's annotation (``Optional[X]``, ``X | None``, ``Annotated[X, ...]``,
  strings);
* a local assignment ``x = X(...)`` or ``x: X = ...`` in the function;
* a module-level name (here or imported) assigned ``X(...)`` or annotated ``X``,
  or returned by a module ``__getattr__`` under ``if name == "x":``;
* ``self.attr``: ``attr: X`` in the class body, or ``self.attr = X(...)`` /
  ``self.attr = param`` (the parameter's annotation) in any method, bases included;
* a call to a project function annotated to return ``X``.

A type is a project class (its methods are followed) or the qualified name of
an outside one (``httpx.AsyncClient``: the rules match it by name).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from profiler.lint.project import FunctionNode, Module, Project, terminal
from profiler.lint.syntax import method, own_nodes, parse_annotation

MAX_TYPE_DEPTH = 8
WRAPPERS = frozenset({"Optional", "Annotated", "Final", "ClassVar", "Type", "type"})


@dataclass(frozen=True, slots=True)
class ClassRef:
    """A class of the project and the module it is defined in."""

    module: Module
    klass: ast.ClassDef


Type = ClassRef | str
"""A project class, or the qualified name of a class outside PATH."""


@dataclass(frozen=True, slots=True)
class Callee:
    """A project function a call reaches; ``label`` names it as a reader would
    (``ToolService.invoke_tool``, ``call_tool``)."""

    module: Module
    function: FunctionNode
    label: str
    via_type: bool


class Callees:
    """Resolves callees and receiver types over one project, memoised."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._owner: dict[int, ClassRef] = {}
        for module in project.modules:
            for node in module.classes.values():
                if isinstance(node, ast.ClassDef):
                    ref = ClassRef(module, node)
                    for statement in node.body:
                        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                            self._owner[id(statement)] = ref
        self._locals: dict[int, dict[str, tuple[Module, ast.expr, bool]]] = {}
        self._attributes: dict[tuple[int, str], Type | None] = {}
        self._busy: set[tuple[int, str]] = set()
        self._nested_defs: dict[int, dict[str, FunctionNode]] = {}
        self._enclosing: dict[int, FunctionNode] = {}

    def owner(self, function: FunctionNode) -> ClassRef | None:
        """The class a function is a method of."""
        return self._owner.get(id(function))

    def resolve(self, module: Module, function: FunctionNode, func: ast.expr) -> Callee | None:
        """The project function ``func`` (a call's callee, in ``function``) stands for."""
        if isinstance(func, ast.Name):
            nested = self._nested(function).get(func.id)
            if nested is not None:
                return Callee(module, nested, nested.name, via_type=False)
        found = self.project.resolve_expr(module, func)
        if found is not None and found.function is not None and found.module is not None:
            return Callee(found.module, found.function, found.name, via_type=False)
        if isinstance(func, ast.Attribute):
            receiver = self.type_of(module, function, func.value)
            if isinstance(receiver, ClassRef):
                hit = self.find_method(receiver, func.attr)
                if hit is not None:
                    owner, node = hit
                    label = f"{owner.klass.name}.{func.attr}"
                    return Callee(owner.module, node, label, via_type=True)
        return None

    def _nested(self, function: FunctionNode) -> dict[str, FunctionNode]:
        """Functions defined inside ``function`` (``async def _send()``), by name."""
        key = id(function)
        cached = self._nested_defs.get(key)
        if cached is None:
            cached = {
                node.name: node
                for node in own_nodes(function.body)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            for node in cached.values():
                self._enclosing[id(node)] = function
            self._nested_defs[key] = cached
        return cached

    def origin(self, module: Module, function: FunctionNode, name: str) -> str:
        """What a local name was bound from, as text with its callee's qualified name
        (``await _redis() mcpgateway.plugins._redis.get_shared_redis_client``); '' if unbound."""
        bound = self._bindings(module, function).get(name)
        if bound is None:
            return ""
        where, expr, _ = bound
        inner = expr.value if isinstance(expr, ast.Await) else expr
        callee = inner.func if isinstance(inner, ast.Call) else inner
        return f"{ast.unparse(expr)} {self.project.qualified_name(where, callee)}"

    def find_method(
        self, ref: ClassRef, name: str, depth: int = 0
    ) -> tuple[ClassRef, FunctionNode] | None:
        """``name`` defined in the class or (depth-first, in order) its project bases."""
        if depth > MAX_TYPE_DEPTH:
            return None
        node = method(ref.klass, name)
        if node is not None:
            return ref, node
        for base in ref.klass.bases:
            parent = self.class_of(ref.module, base)
            if parent is not None:
                found = self.find_method(parent, name, depth + 1)
                if found is not None:
                    return found
        return None

    def class_of(self, module: Module, expr: ast.expr) -> ClassRef | None:
        found = self.project.resolve_expr(module, expr)
        if found is not None and found.klass is not None and found.module is not None:
            return ClassRef(found.module, found.klass)
        return None

    # -- types -----------------------------------------------------------------------------

    def type_of(  # noqa: PLR0911 - one return per receiver shape
        self, module: Module, function: FunctionNode | None, expr: ast.expr, depth: int = 0
    ) -> Type | None:
        """The type of a receiver expression inside ``function`` (None: unknown)."""
        if depth > MAX_TYPE_DEPTH:
            return None
        if isinstance(expr, ast.Await):
            return self.type_of(module, function, expr.value, depth + 1)
        if isinstance(expr, ast.Name):
            if function is not None:
                local = self._local(module, function, expr.id, depth)
                if local is not None:
                    return local
            return self._global(module, expr, depth)
        if isinstance(expr, ast.Attribute):
            base = self.type_of(module, function, expr.value, depth + 1)
            if isinstance(base, ClassRef):
                return self.attribute_type(base, expr.attr, depth + 1)
            return self._global(module, expr, depth)
        if isinstance(expr, ast.Call):
            return self.value_type(module, expr, depth + 1)
        return None

    def value_type(  # noqa: PLR0911 - one return per value shape
        self, module: Module, value: ast.expr, depth: int = 0
    ) -> Type | None:
        """The type of an assigned value: ``X(...)``, ``f()`` annotated ``-> X``, a name."""
        if depth > MAX_TYPE_DEPTH:
            return None
        if isinstance(value, ast.Await):
            return self.value_type(module, value.value, depth + 1)
        if isinstance(value, ast.BoolOp):  # ``client or httpx.AsyncClient()``
            for operand in value.values:
                typed = self.value_type(module, operand, depth + 1)
                if typed is not None:
                    return typed
            return None
        if isinstance(value, ast.Call):
            found = self.project.resolve_expr(module, value.func)
            if found is None:
                return None
            if found.kind == "external":
                last = found.qualified.rpartition(".")[2]
                return found.qualified if last[:1].isupper() else None
            if found.klass is not None and found.module is not None:
                return ClassRef(found.module, found.klass)
            if found.function is not None and found.module is not None:
                return self.annotation_type(found.module, found.function.returns, depth + 1)
            return None
        if isinstance(value, ast.Name | ast.Attribute):
            return self._global(module, value, depth + 1)
        return None

    def annotation_type(  # noqa: PLR0911 - one return per annotation shape
        self, module: Module, annotation: ast.expr | None, depth: int = 0
    ) -> Type | None:
        """The class an annotation names, through ``Optional``, ``| None``, ``Annotated``."""
        if annotation is None or depth > MAX_TYPE_DEPTH:
            return None
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            parsed = parse_annotation(annotation.value)
            return self.annotation_type(module, parsed, depth + 1)
        if isinstance(annotation, ast.Subscript):
            if terminal(annotation.value) in WRAPPERS:
                inner = annotation.slice
                first = inner.elts[0] if isinstance(inner, ast.Tuple) else inner
                return self.annotation_type(module, first, depth + 1)
            return None
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            return self.annotation_type(module, annotation.left, depth + 1) or (
                self.annotation_type(module, annotation.right, depth + 1)
            )
        if isinstance(annotation, ast.Name | ast.Attribute):
            found = self.project.resolve_expr(module, annotation)
            if found is None:
                return None
            if found.klass is not None and found.module is not None:
                return ClassRef(found.module, found.klass)
            if found.kind == "external":
                return found.qualified
            if found.kind == "value" and found.value is not None and found.module is not None:
                return self.annotation_type(found.module, found.value, depth + 1)
        return None

    def attribute_type(self, ref: ClassRef, attr: str, depth: int = 0) -> Type | None:
        """``self.attr``'s type from the class body or an assignment in a method; bases too."""
        key = (id(ref.klass), attr)
        if key in self._attributes:
            return self._attributes[key]
        if key in self._busy or depth > MAX_TYPE_DEPTH:
            return None
        self._busy.add(key)
        try:
            found = self._attribute_in_class(ref, attr, depth)
            if found is None:
                for base in ref.klass.bases:
                    parent = self.class_of(ref.module, base)
                    if parent is not None:
                        found = self.attribute_type(parent, attr, depth + 1)
                        if found is not None:
                            break
        finally:
            self._busy.discard(key)
        self._attributes[key] = found
        return found

    def _attribute_in_class(self, ref: ClassRef, attr: str, depth: int) -> Type | None:
        module = ref.module
        for statement in ref.klass.body:
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and statement.target.id == attr
            ):
                return self.annotation_type(module, statement.annotation, depth + 1)
        for statement in ref.klass.body:
            if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in own_nodes(statement.body):
                if isinstance(node, ast.AnnAssign) and _is_self_attr(node.target, attr):
                    found = self.annotation_type(module, node.annotation, depth + 1)
                    if found is not None:
                        return found
                if isinstance(node, ast.Assign) and any(
                    _is_self_attr(t, attr) for t in node.targets
                ):
                    found = self.type_of(module, statement, node.value, depth + 1)
                    if found is not None:
                        return found
        return None

    def _local(self, module: Module, function: FunctionNode, name: str, depth: int) -> Type | None:
        if depth > MAX_TYPE_DEPTH:
            return None
        if name in ("self", "cls"):
            owner = self.owner(function)
            positional = [*function.args.posonlyargs, *function.args.args]
            if owner is not None and positional and positional[0].arg == name:
                return owner
        for arg in [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]:
            if arg.arg == name:
                return self.annotation_type(module, arg.annotation, depth + 1)
        bound = self._bindings(module, function).get(name)
        if bound is None:
            # A closure (``async def _send()`` inside a method) sees its enclosing names.
            outer = self._enclosing.get(id(function))
            return None if outer is None else self._local(module, outer, name, depth + 1)
        where, expr, is_annotation = bound
        if is_annotation:
            return self.annotation_type(where, expr, depth + 1)
        return self.value_type(where, expr, depth + 1)

    def _bindings(
        self, module: Module, function: FunctionNode
    ) -> dict[str, tuple[Module, ast.expr, bool]]:
        """A function's local names: first annotation, else first assigned value."""
        key = id(function)
        cached = self._locals.get(key)
        if cached is not None:
            return cached
        found: dict[str, tuple[Module, ast.expr, bool]] = {}
        for node in own_nodes(function.body):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                found[node.target.id] = (module, node.annotation, True)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found.setdefault(target.id, (module, node.value, False))
            elif isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    if isinstance(item.optional_vars, ast.Name):
                        found.setdefault(item.optional_vars.id, (module, item.context_expr, False))
        self._locals[key] = found
        return found

    def _global(self, module: Module, expr: ast.Name | ast.Attribute, depth: int) -> Type | None:
        """A module-level name (here or imported): its annotation, its value, or a lazy
        singleton made by its module's ``__getattr__``."""
        found = self.project.resolve_expr(module, expr)
        if found is None:
            return self._lazy(module, expr, depth)
        if found.kind == "external":
            return None
        if found.klass is not None and found.module is not None:
            return ClassRef(found.module, found.klass)  # ``ToolService.method``: a classmethod
        if found.kind == "value" and found.value is not None and found.module is not None:
            annotated = _module_annotation(found.module, found.name)
            if annotated is not None:
                typed = self.annotation_type(found.module, annotated, depth + 1)
                if typed is not None:
                    return typed
            return self.value_type(found.module, found.value, depth + 1)
        return None

    def _lazy(self, module: Module, expr: ast.Name | ast.Attribute, depth: int) -> Type | None:
        """``from svc import tool_service`` where ``svc`` defines it in ``__getattr__``."""
        if isinstance(expr, ast.Name):
            qualified = module.imports.get(expr.id)
            if qualified is None:
                return None
            owner_name, _, attr = qualified.rpartition(".")
            owner = self.project.module(owner_name)
        else:
            base = self.project.resolve_expr(module, expr.value)
            owner = base.module if base is not None and base.kind == "module" else None
            attr = expr.attr
        if owner is None:
            return None
        getattr_function = owner.functions.get("__getattr__")
        if getattr_function is None:
            return None
        for node in own_nodes(getattr_function.body):
            if isinstance(node, ast.If) and _compares_to(node.test, attr):
                for inner in own_nodes(node.body):
                    if isinstance(inner, ast.Call):
                        found = self.value_type(owner, inner, depth + 1)
                        if isinstance(found, ClassRef):
                            return found
        return None


def _is_self_attr(target: ast.expr, attr: str) -> bool:
    return (
        isinstance(target, ast.Attribute)
        and target.attr == attr
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    )


def _compares_to(test: ast.expr, text: str) -> bool:
    return isinstance(test, ast.Compare) and any(
        isinstance(c, ast.Constant) and c.value == text for c in [test.left, *test.comparators]
    )


def _module_annotation(module: Module, name: str) -> ast.expr | None:
    for statement in module.tree.body:
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.target.id == name
        ):
            return statement.annotation
    return None
