"""``profiler lint`` following calls through service objects, and counting sessions per request.

Each test writes a small multi-module package to ``tmp_path`` (a ``services``
module with the slow HTTP call, a ``routes`` module with the handler), so the
call has to be followed across modules the way a real gateway spreads it.
Nothing is imported.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from profiler.lint import Finding, LintResult, lint_path

DB = """
from collections.abc import Iterator
from typing import Annotated
from fastapi import Depends
from sqlalchemy.orm import Session, sessionmaker

SessionLocal = sessionmaker()

def get_db() -> Iterator[Session]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()

def get_auth_db() -> Iterator[Session]:
    with SessionLocal() as db:
        yield db

Db = Annotated[Session, Depends(get_db)]
"""

SERVICES = """
import httpx


class ToolService:
    def __init__(self) -> None:
        self._client = httpx.AsyncClient()

    async def invoke_tool(self, name: str) -> dict:
        return await self._call(name)

    async def _call(self, name: str) -> dict:
        response = await self._client.post("/invoke", json={"name": name})
        return response.json()

    async def describe(self, name: str) -> dict:
        return {"name": name}


tool_service = ToolService()
"""


def write(root: Path, files: dict[str, str]) -> Path:
    package = root / "app"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name, text in {"db.py": DB, "services.py": SERVICES, **files}.items():
        (package / name).write_text(textwrap.dedent(text))
    return package


def lint(tmp_path: Path, files: dict[str, str], **options: int) -> LintResult:
    return lint_path(write(tmp_path, files), **options)  # type: ignore[arg-type]


def finding(result: LintResult, handler: str) -> Finding:
    return next(f for f in result.findings if f.handler == handler)


def flagged(result: LintResult) -> set[str]:
    return {f.handler for f in result.findings}


def downstream(result: LintResult, handler: str) -> str:
    (reason,) = [r for r in finding(result, handler).reasons if r.kind == "downstream-await"]
    return reason.detail


def line_of(package: Path, file: str, text: str) -> int:
    lines = (package / file).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


# -- following calls into service objects ----------------------------------------------------


def test_module_singleton_imported_from_another_module(tmp_path: Path) -> None:
    # GIVEN a handler holding get_db that awaits a method of an imported service singleton
    routes = """
        from fastapi import APIRouter
        from app.db import Db
        from app.services import tool_service

        router = APIRouter()

        @router.post("/tools/{name}/invoke")
        async def invoke(name: str, db: Db) -> dict:
            return await tool_service.invoke_tool(name)

        @router.get("/tools/{name}")
        async def describe(name: str, db: Db) -> dict:
            return await tool_service.describe(name)
    """
    package = write(tmp_path, {"routes.py": routes})
    # WHEN linted
    result = lint_path(package)
    # THEN the slow call two methods deep is found, the chain names each hop and the client,
    # and points at the line of the HTTP call in the service module
    assert flagged(result) == {"invoke"}
    detail = downstream(result, "invoke")
    post = line_of(package, "services.py", "self._client.post")
    assert detail == (
        "await tool_service.invoke_tool(...) [ToolService.invoke_tool] -> "
        "await self._call(...) [ToolService._call] -> "
        f"await self._client.post(...) [httpx.AsyncClient.post] (services.py:{post})"
    )
    assert finding(result, "invoke").severity == "error"


def test_self_attribute_assigned_from_a_parameter_annotation(tmp_path: Path) -> None:
    # GIVEN a facade whose attribute is a ToolService handed to __init__, used from a handler
    facade = """
        from app.services import ToolService

        class Gateway:
            def __init__(self, tools: ToolService) -> None:
                self.tool_service = tools

            async def forward(self, name: str) -> dict:
                return await self.tool_service.invoke_tool(name)

        gateway = Gateway(ToolService())
    """
    routes = """
        from fastapi import APIRouter, Depends
        from app.db import get_db
        from app.facade import gateway

        router = APIRouter()

        @router.post("/forward")
        async def forward(name: str, db=Depends(get_db)) -> dict:
            return await gateway.forward(name)
    """
    # WHEN linted
    result = lint(tmp_path, {"facade.py": facade, "routes.py": routes})
    # THEN self.tool_service is typed from the parameter and followed to the HTTP call
    detail = downstream(result, "forward")
    assert "[Gateway.forward]" in detail
    assert "[ToolService.invoke_tool]" in detail
    assert "[httpx.AsyncClient.post] (services.py:" in detail


def test_annotated_parameter_and_class_attribute_annotation(tmp_path: Path) -> None:
    # GIVEN the service injected as a dependency, typed by the parameter's annotation,
    # and a holder class whose attribute is only annotated in the class body
    routes = """
        from typing import Annotated, Optional
        from fastapi import APIRouter, Depends
        from app.db import Db
        from app.services import ToolService

        router = APIRouter()

        def get_tool_service() -> ToolService:
            return ToolService()

        class Holder:
            tools: "Optional[ToolService]"

        holder = Holder()

        @router.post("/a")
        async def by_default(name: str, db: Db, svc: ToolService = Depends(get_tool_service)):
            return await svc.invoke_tool(name)

        @router.post("/b")
        async def by_annotated(
            name: str, db: Db, svc: Annotated[ToolService | None, Depends(get_tool_service)]
        ):
            return await svc.invoke_tool(name)

        @router.post("/c")
        async def by_class_attribute(name: str, db: Db):
            return await holder.tools.invoke_tool(name)

        @router.post("/d")
        async def by_return_annotation(name: str, db: Db):
            return await get_tool_service().invoke_tool(name)
    """
    # WHEN linted
    result = lint(tmp_path, {"routes.py": routes})
    # THEN each way of naming the type reaches the HTTP call
    handlers = {"by_default", "by_annotated", "by_class_attribute", "by_return_annotation"}
    assert flagged(result) == handlers
    for handler in handlers:
        assert "[ToolService.invoke_tool]" in downstream(result, handler), handler


def test_lazy_singleton_from_a_module_getattr(tmp_path: Path) -> None:
    # GIVEN a service module that makes its singleton on first access (module __getattr__)
    lazy = """
        from app.services import ToolService

        _instance = None

        def __getattr__(name: str):
            global _instance
            if name == "lazy_tools":
                if _instance is None:
                    _instance = ToolService()
                return _instance
            raise AttributeError(name)
    """
    routes = """
        from fastapi import APIRouter
        from app.db import Db
        from app.lazy import lazy_tools

        router = APIRouter()

        @router.post("/lazy")
        async def via_lazy(name: str, db: Db) -> dict:
            return await lazy_tools.invoke_tool(name)
    """
    # WHEN linted
    result = lint(tmp_path, {"lazy.py": lazy, "routes.py": routes})
    # THEN the singleton's type comes from the __getattr__ branch that names it
    assert "[ToolService.invoke_tool]" in downstream(result, "via_lazy")


def test_inherited_method_and_async_function_handed_to_a_retry_helper(tmp_path: Path) -> None:
    # GIVEN a service whose method lives on its base class and sends through a nested
    # function handed to a retry helper
    services2 = """
        import httpx

        class Base:
            async def _with_retry(self, send, payload):
                return await send(payload)

        class Resilient(Base):
            def __init__(self) -> None:
                self.http = httpx.AsyncClient()

            async def call(self, payload: dict) -> dict:
                async def _send(body: dict) -> dict:
                    return (await self.http.post("/x", json=body)).json()

                return await self._with_retry(_send, payload)

        resilient = Resilient()
    """
    routes = """
        from fastapi import APIRouter
        from app.db import Db
        from app.services2 import resilient

        router = APIRouter()

        @router.post("/r")
        async def retried(db: Db) -> dict:
            return await resilient.call({})
    """
    # WHEN linted
    result = lint(tmp_path, {"services2.py": services2, "routes.py": routes})
    # THEN the nested _send is followed from the awaited helper it is handed to
    detail = downstream(result, "retried")
    assert "[Resilient.call]" in detail and "-> _send ->" in detail
    assert "[httpx.AsyncClient.post]" in detail


def test_a_cycle_of_calls_terminates_and_depth_is_bounded(tmp_path: Path) -> None:
    # GIVEN two services calling each other, one of them (eventually) awaiting the HTTP call
    cycle = """
        from app.services import tool_service

        class Ping:
            def __init__(self) -> None:
                self.pong = Pong(self)

            async def ping(self, n: int) -> None:
                await self.pong.pong(n)

        class Pong:
            def __init__(self, other: "Ping") -> None:
                self.other = other

            async def pong(self, n: int) -> None:
                await self.other.ping(n - 1)
                await tool_service.invoke_tool("x")

        class Loop:
            async def a(self) -> None:
                await self.b()

            async def b(self) -> None:
                await self.a()

        pinger = Ping()
        looper = Loop()
    """
    routes = """
        from fastapi import APIRouter
        from app.cycle import looper, pinger
        from app.db import Db

        router = APIRouter()

        @router.get("/ping")
        async def ping(db: Db) -> None:
            await pinger.ping(3)

        @router.get("/loop")
        async def loop(db: Db) -> None:
            await looper.a()
    """
    files = {"cycle.py": cycle, "routes.py": routes}
    # WHEN linted with the default depth
    result = lint(tmp_path / "deep", files)
    # THEN the cycle ends; the slow call is found through it, and a pure cycle flags nothing
    assert flagged(result) == {"ping"}
    assert "[Pong.pong]" in downstream(result, "ping")
    # AND with the depth bound below the chain's length, it is not followed that far
    shallow = lint(tmp_path / "shallow", files, max_depth=2)
    assert "ping" not in flagged(shallow)


# -- sessions per request ----------------------------------------------------------------------


def test_sub_dependency_on_another_session_dependency_is_two_sessions(tmp_path: Path) -> None:
    # GIVEN an auth dependency on get_auth_db next to the handler's get_db; another on get_db;
    # and one that keeps its own session block open across its yield
    auth = """
        from typing import Annotated
        from fastapi import Depends
        from sqlalchemy.orm import Session
        from app.db import SessionLocal, get_auth_db, get_db

        def user_own_db(db: Annotated[Session, Depends(get_auth_db)]) -> dict:
            return {"id": 1}

        def user_shared_db(db: Annotated[Session, Depends(get_db)]) -> dict:
            return {"id": 1}

        def user_holding_block():
            with SessionLocal() as db:
                yield {"id": 1}
    """
    routes = """
        from fastapi import APIRouter, Depends
        from app.auth import user_holding_block, user_own_db, user_shared_db
        from app.db import Db

        router = APIRouter()

        @router.get("/two")
        async def two(db: Db, user=Depends(user_own_db)) -> dict:
            return {}

        @router.get("/one")
        async def one(db: Db, user=Depends(user_shared_db)) -> dict:
            return {}

        @router.get("/block", dependencies=[Depends(user_holding_block)])
        async def block(db: Db) -> dict:
            return {}
    """
    # WHEN linted
    result = lint(tmp_path, {"auth.py": auth, "routes.py": routes})
    # THEN two different session dependencies in one request are PRL005 with what it costs,
    # and the same get_db reached twice (FastAPI caches it per request) is one session
    assert flagged(result) == {"two", "block"}
    (reason,) = finding(result, "two").reasons
    assert reason.kind == "sessions-per-request"
    assert reason.detail == (
        "each request takes 2 sessions at once (get_db, user_own_db -> get_auth_db): "
        "a pool of 10 serves at most 5 such requests at once"
    )
    assert [r.kind for r in finding(result, "block").reasons] == ["sessions-per-request"]
    (rule, text, _) = finding(result, "two").messages()[0]
    assert rule.id == "PRL005" and rule.level == "warning"
    assert text.startswith("two (GET /two) holds a DB session via get_db, user_own_db -> ")


# -- middleware --------------------------------------------------------------------------------


MIDDLEWARE = """
from fastapi import FastAPI
from starlette.middleware.base import BaseHTTPMiddleware
from app.db import SessionLocal, get_db

app = FastAPI()


class HoldingMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        with SessionLocal() as db:
            request.state.user = db.get("User", 1)
            response = await call_next(request)
        return response


class ClosingMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        with SessionLocal() as db:
            request.state.user = db.get("User", 1)
        return await call_next(request)


class Audit(HoldingMiddleware):
    pass


class AuditMiddleware(Audit):
    async def dispatch(self, request, nxt):
        db = next(get_db())
        try:
            return await nxt(request)
        finally:
            db.close()


@app.middleware("http")
async def tenant(request, call_next):
    db = SessionLocal()
    request.state.tenant = db.get("Tenant", 1)
    db.close()
    return await call_next(request)


@app.middleware("http")
async def tenant_held(request, call_next):
    db = SessionLocal()
    response = await call_next(request)
    db.close()
    return response


class AsgiMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        async with SessionLocal() as db:
            scope["db"] = db
            await self.app(scope, receive, send)
"""


def test_middleware_holding_a_session_across_call_next(tmp_path: Path) -> None:
    # GIVEN middlewares of each kind, holding or closing their session before the next layer
    package = write(tmp_path, {"middleware.py": MIDDLEWARE})
    # WHEN linted
    result = lint_path(package)
    # THEN the holders are PRL006 errors at their def, the closers are not flagged
    assert flagged(result) == {
        "HoldingMiddleware.dispatch",
        "AuditMiddleware.dispatch",
        "tenant_held",
        "AsgiMiddleware.__call__",
    }
    holding = finding(result, "HoldingMiddleware.dispatch")
    assert holding.file == "middleware.py"
    assert holding.line == line_of(package, "middleware.py", "class HoldingMiddleware") + 1
    assert holding.severity == "error"
    ((rule, text, reasons),) = holding.messages()
    assert rule.id == "PRL006"
    call_next = line_of(package, "middleware.py", "response = await call_next(request)")
    assert reasons[0].line == call_next
    assert "await call_next(...) while SessionLocal(...) (line " in text
    audit = finding(result, "AuditMiddleware.dispatch")
    assert audit.dependencies == ("get_db(...)",)
    assert "await nxt(...)" in audit.reasons[0].detail
    assert "await self.app(...)" in finding(result, "AsgiMiddleware.__call__").reasons[0].detail
    # AND a middleware is not an endpoint: the endpoint counts do not change
    assert result.counts()["endpoints"] == 0 and result.counts()["flagged"] == 4


# -- a session given back before the slow call -------------------------------------------------


def test_session_released_before_the_slow_call_is_not_held(tmp_path: Path) -> None:
    # GIVEN services that give the request's session back (commit/close) before their HTTP
    # call: at the top level, inside the branch that calls, on another branch only, and one
    # that queries again after closing
    released = """
        import httpx
        from sqlalchemy.orm import Session

        client = httpx.AsyncClient()

        class Released:
            async def top(self, db: Session) -> None:
                db.execute("select 1")
                db.commit()
                db.close()
                await client.post("/x")

            async def branch(self, db: Session, remote: bool) -> None:
                db.execute("select 1")
                if remote:
                    db.close()
                    await client.post("/x")

            async def other_branch(self, db: Session, remote: bool) -> None:
                db.execute("select 1")
                if remote:
                    db.close()
                await client.post("/x")

            async def touched_again(self, db: Session) -> None:
                db.close()
                db.execute("select 1")
                await client.post("/x")

        released = Released()
    """
    routes = """
        from fastapi import APIRouter
        from app.db import Db
        from app.released import released

        router = APIRouter()

        @router.post("/top")
        async def top(db: Db) -> None:
            await released.top(db)

        @router.post("/branch")
        async def branch(db: Db) -> None:
            await released.branch(db, True)

        @router.post("/other")
        async def other_branch(db: Db) -> None:
            await released.other_branch(db, True)

        @router.post("/again")
        async def touched_again(db: Db) -> None:
            await released.touched_again(db)
    """
    # WHEN linted
    result = lint(tmp_path, {"released.py": released, "routes.py": routes})
    # THEN only the awaits with the session still (or again) checked out are flagged
    assert flagged(result) == {"other_branch", "touched_again"}


def test_cli_reports_middleware_and_two_sessions_as_lines_and_annotations(
    tmp_path: Path, run_cli
) -> None:
    # GIVEN a package with a holding middleware and a handler taking two sessions
    routes = """
        from fastapi import APIRouter, Depends
        from app.db import Db, get_auth_db

        router = APIRouter()

        def current_user(db=Depends(get_auth_db)) -> dict:
            return {"id": 1}

        @router.get("/me")
        async def me(db: Db, user=Depends(current_user)) -> dict:
            return user
    """
    package = write(tmp_path, {"middleware.py": MIDDLEWARE, "routes.py": routes})
    # WHEN the CLI prints text, and GitHub annotations, failing on any finding
    text = run_cli("lint", str(package), "--fail-on", "0")
    github = run_cli("lint", str(package), "--format", "github")
    # THEN each is one parseable line per finding with its rule, and the gate fails
    assert text.exit_code == 1, text.output
    codes = sorted(line.split(" ", 2)[1] for line in text.stdout.splitlines())
    assert codes == ["PRL005"] + ["PRL006"] * 4
    assert "1 endpoints in 5 files: 1 hold a DB session, 0 across awaits; 5 flagged" in (
        text.stderr
    )
    levels = sorted(line.split(" ", 1)[0] for line in github.stdout.splitlines())
    assert levels == ["::error"] * 4 + ["::warning"]
