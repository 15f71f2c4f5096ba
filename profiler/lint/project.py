"""The project as ``ast`` trees: its modules, their imports, and names resolved across them.

``profiler lint`` must never import the code it reads (importing a gateway
connects to databases, reads settings, starts clients), so every question
"what is ``Db``?", "where is ``call_tool`` defined?" is answered here from the
syntax trees and the import statements alone.

Module names are the ones Python would use: a file's dotted name is found by
walking up the folders that hold an ``__init__.py``, so ``from
app.deps import Db`` resolves even when PATH is ``app/`` itself. An import that
names no module exactly is matched by suffix (``deps`` finds ``app.deps`` when
that is the only one), which covers scripts run from inside their package.
Anything that resolves outside PATH is reported by its qualified name
(``requests.get``, ``httpx.AsyncClient``): the rules match those by name.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef

SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".mypy_cache",
        ".nox",
        ".ruff_cache",
        ".tox",
        ".venv",
        "__pycache__",
        "build",
        "dist",
        "node_modules",
        "site-packages",
        "venv",
    }
)
"""Folders never read: virtualenvs, caches and build output hold other people's code."""

MAX_RESOLVE_DEPTH = 24

T = TypeVar("T")


class FunctionMemo(Generic[T]):
    """One answer per function (by node identity), computed once and cycle-safe: a function
    asked about again while its own answer is being computed (a call cycle) gets ``empty()``
    for that inner question, and the outer answer is kept."""

    def __init__(self, empty: Callable[[], T]) -> None:
        self._empty = empty
        self._done: dict[int, T] = {}
        self._busy: set[int] = set()

    def get(self, function: FunctionNode, compute: Callable[[], T]) -> T:
        key = id(function)
        if key in self._done:
            return self._done[key]
        if key in self._busy:
            return self._empty()
        self._busy.add(key)
        try:
            answer = compute()
        finally:
            self._busy.discard(key)
        self._done[key] = answer
        return answer


@dataclass(eq=False)
class Module:
    """One parsed file: its dotted name, its tree and the names it defines or imports."""

    name: str
    path: Path
    rel: str
    tree: ast.Module
    is_package: bool
    imports: dict[str, str] = field(default_factory=dict)
    functions: dict[str, FunctionNode] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    values: dict[str, ast.expr] = field(default_factory=dict)
    local_values: dict[str, ast.expr] = field(default_factory=dict)

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a name turned out to be.

    ``kind`` is ``function``, ``class``, ``value`` (an assignment: ``Db =
    Annotated[...]``, ``router = APIRouter()``), ``module`` or ``external``
    (outside PATH: ``qualified`` names it).
    """

    kind: str
    module: Module | None = None
    name: str = ""
    function: FunctionNode | None = None
    klass: ast.ClassDef | None = None
    value: ast.expr | None = None
    qualified: str = ""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file that could not be read or parsed; linting goes on without it."""

    rel: str
    error: str


class Project:
    """Every module under one root, indexed for name resolution."""

    def __init__(self, root: Path, modules: list[Module], skipped: list[Unreadable]) -> None:
        self.root = root
        self.modules = modules
        self.skipped = skipped
        self._by_name: dict[str, Module] = {m.name: m for m in modules}
        self._by_suffix: dict[str, list[Module]] = {}
        for module in modules:
            parts = module.name.split(".")
            for start in range(1, len(parts)):
                self._by_suffix.setdefault(".".join(parts[start:]), []).append(module)

    def module(self, dotted: str) -> Module | None:
        """The project module called ``dotted``, exactly or as the unique suffix match."""
        found = self._by_name.get(dotted)
        if found is not None:
            return found
        candidates = self._by_suffix.get(dotted, [])
        return candidates[0] if len(candidates) == 1 else None

    # -- resolution --

    def resolve_name(  # noqa: PLR0911 - one return per kind of definition, in lookup order
        self, module: Module, name: str, depth: int = 0
    ) -> Resolved | None:
        """``name`` as seen from ``module``: its own definitions first, then its imports."""
        if depth > MAX_RESOLVE_DEPTH:
            return None
        if name in module.functions:
            return Resolved("function", module, name, function=module.functions[name])
        if name in module.classes:
            return Resolved("class", module, name, klass=module.classes[name])
        if name in module.values:
            return Resolved("value", module, name, value=module.values[name])
        if name in module.imports:
            return self.resolve_qualified(module.imports[name], depth + 1)
        if name in module.local_values:
            return Resolved("value", module, name, value=module.local_values[name])
        return None

    def resolve_qualified(self, dotted: str, depth: int = 0) -> Resolved | None:
        """A dotted name (``pkg.mod.attr``): the longest project module prefix, then attributes."""
        if depth > MAX_RESOLVE_DEPTH:
            return None
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            module = self.module(".".join(parts[:cut]))
            if module is None:
                continue
            current: Resolved | None = Resolved("module", module, module.name)
            for attr in parts[cut:]:
                current = self.attribute(current, attr, depth + 1)
                if current is None:
                    return None
            return current
        return Resolved("external", qualified=dotted)

    def attribute(self, base: Resolved | None, attr: str, depth: int = 0) -> Resolved | None:
        if base is None:
            return None
        if base.kind == "module" and base.module is not None:
            found = self.resolve_name(base.module, attr, depth + 1)
            if found is None and base.module.is_package:
                return self.resolve_qualified(f"{base.module.name}.{attr}", depth + 1)
            return found
        if base.kind == "external":
            # ``import profiler.lab.gateway`` binds ``profiler``, which may lie outside PATH
            # while ``profiler.lab.gateway.queries`` is inside it.
            return self.resolve_qualified(f"{base.qualified}.{attr}", depth + 1)
        return None

    def resolve_expr(self, module: Module, expr: ast.expr, depth: int = 0) -> Resolved | None:
        """A ``Name`` or ``Attribute`` chain resolved from ``module``; anything else is None."""
        if isinstance(expr, ast.Name):
            return self.resolve_name(module, expr.id, depth)
        if isinstance(expr, ast.Attribute):
            return self.attribute(self.resolve_expr(module, expr.value, depth + 1), expr.attr)
        return None

    def qualified_name(self, module: Module, expr: ast.expr) -> str:
        """The dotted name a callee stands for (``requests.get``), as imported, or as written."""
        found = self.resolve_expr(module, expr)
        if found is not None:
            if found.kind == "external":
                return found.qualified
            if found.kind == "module" and found.module is not None:
                return found.module.name
            if found.module is not None and found.name:
                return f"{found.module.name}.{found.name}"
        if isinstance(expr, ast.Attribute):
            base = self.qualified_name(module, expr.value)
            return f"{base}.{expr.attr}" if base else ""
        return dotted(expr) or ""


def dotted(expr: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    parts.append(expr.id)
    return ".".join(reversed(parts))


def terminal(expr: ast.expr) -> str:
    """The last name of a Name/Attribute chain (``Depends`` for ``fastapi.Depends``), else ''."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return ""


# -- loading -------------------------------------------------------------------------------


def python_files(root: Path) -> Iterator[Path]:
    """Every ``.py`` file under ``root`` (or ``root`` itself), sorted, skipping tool folders."""
    if root.is_file():
        yield root
        return
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(current) / name


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name Python would give ``path`` (walking up ``__init__.py`` folders)."""
    is_package = path.name == "__init__.py"
    parts = [] if is_package else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        if folder.parent == folder:
            break
        folder = folder.parent
    if not parts:
        parts = [path.parent.name or "__root__"]
    return ".".join(reversed(parts)), is_package


def load(root: Path) -> Project:
    """Parse every file under ``root``; unreadable or invalid ones become :class:`Unreadable`."""
    base = root if root.is_dir() else root.parent
    modules: list[Module] = []
    skipped: list[Unreadable] = []
    for path in python_files(root):
        rel = path.relative_to(base).as_posix()
        try:
            source = path.read_bytes()
            tree = ast.parse(source, filename=rel)
        except SyntaxError as exc:
            skipped.append(Unreadable(rel, f"syntax error at line {exc.lineno}: {exc.msg}"))
            continue
        except (OSError, ValueError) as exc:
            skipped.append(Unreadable(rel, f"{type(exc).__name__}: {exc}"))
            continue
        name, is_package = module_name(path.resolve())
        module = Module(name, path, rel, tree, is_package)
        _index(module)
        modules.append(module)
    return Project(base, modules, skipped)


def _index(module: Module) -> None:
    """Fill a module's imports, functions, classes and assignments.

    Module-level names go to ``functions``/``classes``/``values``; assignments
    and functions inside function bodies (an app built in ``create_app()``)
    are kept too, with module-level ones winning a name clash, because routes
    are often declared there.
    """
    for node in module.tree.body:
        _index_statement(module, node, top=True)
    for outer in ast.walk(module.tree):
        if isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(outer):
                if inner is outer:
                    continue
                if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                    module.functions.setdefault(inner.name, inner)
                elif isinstance(inner, ast.Assign):
                    for target in inner.targets:
                        if isinstance(target, ast.Name):
                            module.local_values.setdefault(target.id, inner.value)
                elif isinstance(inner, ast.Import | ast.ImportFrom):
                    _index_import(module, inner)


def _index_statement(  # noqa: PLR0912 - one branch per statement kind that binds a name
    module: Module, node: ast.stmt, *, top: bool
) -> None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        module.functions[node.name] = node
    elif isinstance(node, ast.ClassDef):
        module.classes[node.name] = node
    elif isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name):
                module.values[target.id] = node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        if isinstance(node.target, ast.Name):
            module.values[node.target.id] = node.value
    elif isinstance(node, ast.Import | ast.ImportFrom):
        _index_import(module, node)
    elif type(node).__name__ == "TypeAlias":  # ``type Db = Annotated[...]`` (3.12+)
        alias_name = getattr(node, "name", None)
        alias_value = getattr(node, "value", None)
        if isinstance(alias_name, ast.Name) and isinstance(alias_value, ast.expr):
            module.values[alias_name.id] = alias_value
    elif isinstance(node, ast.If | ast.Try):
        # ``if TYPE_CHECKING:`` imports and ``try: import x except ImportError`` fallbacks.
        bodies: list[list[ast.stmt]] = [node.body, node.orelse]
        if isinstance(node, ast.Try):
            bodies += [handler.body for handler in node.handlers] + [node.finalbody]
        for body in bodies:
            for inner in body:
                _index_statement(module, inner, top=top)


def _index_import(module: Module, node: ast.Import | ast.ImportFrom) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                module.imports.setdefault(alias.asname, alias.name)
            else:
                top = alias.name.split(".", 1)[0]
                module.imports.setdefault(top, top)
        return
    source = node.module or ""
    if node.level:
        package = module.package.split(".") if module.package else []
        keep = len(package) - (node.level - 1)
        base = ".".join(package[: max(keep, 0)])
        source = ".".join(part for part in (base, source) if part)
    for alias in node.names:
        if alias.name == "*":
            continue
        module.imports.setdefault(alias.asname or alias.name, f"{source}.{alias.name}")
