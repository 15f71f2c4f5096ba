"""The slow work of a function: downstream awaits, sleeps and blocking calls, through its calls."""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass

from profiler.lint.calls import Callee, Callees
from profiler.lint.model import DOWNSTREAM, KIND_ORDER, SLEEP, SLOW_CALL
from profiler.lint.project import FunctionMemo, FunctionNode, Module, Project, dotted, terminal
from profiler.lint.release import releases
from profiler.lint.settings import Settings
from profiler.lint.syntax import opens_session, own_nodes, short

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
_NOT_HTTP = re.compile(r"(?i)redis|cache|memcache")
"""Receivers that are named like clients but are caches: fast, not the downstream call."""
_CLIENT_NAME = re.compile(r"(?i)(^|_)(https?|client|downstream|upstream|httpx|aiohttp)($|_)")


@dataclass(frozen=True, slots=True)
class Effect:
    """Something slow a function does, possibly through calls: its kind, how, and where."""

    kind: str
    detail: str
    where: str
    hops: int


@dataclass(frozen=True, slots=True)
class Hit:
    """One piece of slow work found in a body: ``where`` is set when it is in another
    function (the innermost place), ``hops`` counts the calls followed to it."""

    kind: str
    detail: str
    where: str | None = None
    hops: int = 0

    def text(self) -> str:
        return f"{self.detail} ({self.where})" if self.where else self.detail


class SlowWork:
    """The slow work of bodies and of the project functions they call (memoised, cycle-safe)."""

    def __init__(self, project: Project, settings: Settings) -> None:
        self.project = project
        self.settings = settings
        self.callees = Callees(project)
        self._effects: FunctionMemo[list[Effect]] = FunctionMemo(list)

    def scan(
        self, module: Module, function: FunctionNode, *, blocks_only: bool = False
    ) -> list[tuple[int, Hit, str]]:
        """(line, hit, block) of the slow work in a body; ``blocks_only``: only inside
        short-lived session blocks (``block`` names the block)."""
        clients, sync_clients = self._clients(module, function)
        found: list[tuple[int, Hit, str]] = []
        awaited: set[int] = set()
        for node, block in self._walk(module, function.body, blocks_only):
            if blocks_only and block is None:
                continue
            item: Hit | None = None
            if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
                awaited.add(id(node.value))
                item = self._awaited(module, function, node.value, clients, awaited)
            elif isinstance(node, ast.AsyncWith):
                for with_item in node.items:
                    context = with_item.context_expr
                    if isinstance(context, ast.Call):
                        awaited.add(id(context))
                        client = self._http_client(module, function, context, clients)
                        if client is not None:
                            item = Hit(DOWNSTREAM, f"async with {short(context)}{client}")
            elif isinstance(node, ast.Call) and id(node) not in awaited:
                item = self._called(module, function, node, sync_clients)
            if item is not None:
                found.append((getattr(node, "lineno", function.lineno), item, block or ""))
        if blocks_only or not found:
            return found
        given_back = releases(function)
        return [hit for hit in found if given_back.holds_at(hit[0])]

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
                        and opens_session(item.context_expr)
                    ),
                    None,
                )
                if opener is not None:
                    keyword = "async with" if isinstance(node, ast.AsyncWith) else "with"
                    inner = f"{keyword} {short(opener)} (line {node.lineno})"
                    for item in node.items:
                        stack.append((item, block))
                    stack.extend((child, inner) for child in reversed(node.body))
                    continue
            stack.extend((child, inner) for child in reversed(list(ast.iter_child_nodes(node))))

    def _awaited(  # noqa: PLR0911 - one return per kind of awaited call, checked in order
        self,
        module: Module,
        function: FunctionNode,
        call: ast.Call,
        clients: set[str],
        awaited: set[int],
    ) -> Hit | None:
        qualified = self.project.qualified_name(module, call.func)
        if qualified in SLEEPS:
            return Hit(SLEEP, f"await {qualified}(...)")
        if qualified in GATHERS:
            for argument in call.args:
                if isinstance(argument, ast.Call):
                    awaited.add(id(argument))
                    inner = self._awaited(module, function, argument, clients, awaited)
                    if inner is not None:
                        detail = f"await {qualified}({inner.detail.removeprefix('await ')})"
                        return Hit(inner.kind, detail, inner.where, inner.hops)
            return None
        if qualified in THREAD_RUNNERS or terminal(call.func) == "run_in_executor":
            position = 1 if terminal(call.func) == "run_in_executor" else 0
            if len(call.args) > position:
                slow = self._slow_callable(module, call.args[position])
                if slow is not None:
                    return Hit(SLOW_CALL, f"await {qualified}({slow})")
            return None
        client = self._http_client(module, function, call, clients)
        if client is not None:
            return Hit(DOWNSTREAM, f"await {short(call)}{client}")
        return self._followed(module, function, call)

    def _followed(self, module: Module, function: FunctionNode, call: ast.Call) -> Hit | None:
        """The slow work of the project function awaited, or of an async function passed to
        it: the chain of fewest calls."""
        found: list[tuple[Effect, str]] = []
        callee = self.callees.resolve(module, function, call.func)
        if callee is not None:
            effect = worst(self.function_effects(callee.module, callee.function))
            if effect is not None:
                found.append((effect, f"await {short(call)}{_label(callee)} -> "))
        for argument in call.args:
            # ``await retry(_send, ...)``: an async function handed over is awaited by the callee.
            passed = (
                self.callees.resolve(module, function, argument)
                if isinstance(argument, ast.Name | ast.Attribute)
                else None
            )
            if passed is not None and isinstance(passed.function, ast.AsyncFunctionDef):
                effect = worst(self.function_effects(passed.module, passed.function))
                if effect is not None:
                    prefix = f"await {short(call)} -> {passed.label or passed.function.name} -> "
                    found.append((effect, prefix))
        if not found:
            return None
        effect, prefix = min(found, key=lambda pair: (KIND_ORDER.index(pair[0].kind), pair[0].hops))
        return Hit(effect.kind, prefix + effect.detail, effect.where, effect.hops + 1)

    def _called(
        self, module: Module, function: FunctionNode, call: ast.Call, sync_clients: set[str]
    ) -> Hit | None:
        slow = self._slow_callable(module, call.func)
        if slow is not None:
            return Hit(SLOW_CALL, f"{slow}(...)")
        if isinstance(call.func, ast.Attribute) and call.func.attr in HTTP_METHODS:
            if (dotted(call.func.value) or "") in sync_clients:
                return Hit(SLOW_CALL, short(call))
            typed = self.callees.type_of(module, function, call.func.value)
            if isinstance(typed, str) and typed in SYNC_CLIENT_TYPES:
                return Hit(SLOW_CALL, f"{short(call)} [{typed}.{call.func.attr}]")
        callee = self.callees.resolve(module, function, call.func)
        if callee is not None and isinstance(callee.function, ast.FunctionDef):
            effects = self.function_effects(callee.module, callee.function)
            effect = worst([e for e in effects if e.kind == SLOW_CALL])
            if effect is not None:
                detail = f"{short(call)}{_label(callee)} -> {effect.detail}"
                return Hit(SLOW_CALL, detail, effect.where, effect.hops + 1)
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

    def _http_client(
        self, module: Module, function: FunctionNode, call: ast.Call, clients: set[str]
    ) -> str | None:
        """A method of an HTTP client (a name typed or built as one, or named like one): the
        client type as `` [httpx.AsyncClient.post]`` when known, else ``""``; None: not one."""
        if not (isinstance(call.func, ast.Attribute) and call.func.attr in HTTP_METHODS):
            return None
        receiver = call.func.value
        typed = self.callees.type_of(module, function, receiver)
        if isinstance(typed, str) and typed in ASYNC_CLIENT_TYPES | SYNC_CLIENT_TYPES:
            return f" [{typed}.{call.func.attr}]"
        if isinstance(typed, str) and typed.startswith(("sqlalchemy.", "fastapi.", "starlette.")):
            return None  # a session's ``get``, a request's ``send``: not downstream calls
        name = dotted(receiver) or ""
        origin = ""
        if isinstance(receiver, ast.Name):
            origin = self.callees.origin(module, function, receiver.id)
        if _NOT_HTTP.search(f"{terminal(receiver)} {origin}") or (
            isinstance(typed, str) and _NOT_HTTP.search(typed)
        ):
            return None
        if name in clients or _CLIENT_NAME.search(terminal(receiver)):
            return ""
        return None

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
        for node in own_nodes(function.body):
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

    def function_effects(self, module: Module, function: FunctionNode) -> list[Effect]:
        """The slow work of a project function, following its calls (memoised, cycle-safe)."""
        return self._effects.get(function, lambda: self._effects_of(module, function))

    def _effects_of(self, module: Module, function: FunctionNode) -> list[Effect]:
        shortest: dict[str, Effect] = {}  # per kind, the chain of fewest calls
        for line, hit, _ in self.scan(module, function):
            where = hit.where or f"{module.rel}:{line}"
            known = shortest.get(hit.kind)
            if hit.hops < self.settings.max_depth and (known is None or hit.hops < known.hops):
                shortest[hit.kind] = Effect(hit.kind, hit.detail, where, hit.hops)
        return list(shortest.values())


def _label(callee: Callee) -> str:
    """`` [ToolService.invoke_tool]`` when the callee was found through its receiver's type."""
    return f" [{callee.label}]" if callee.via_type else ""


def worst(effects: list[Effect]) -> Effect | None:
    ranked = sorted(effects, key=lambda e: (KIND_ORDER.index(e.kind), e.hops))
    return ranked[0] if ranked else None
