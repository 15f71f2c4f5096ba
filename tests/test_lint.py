"""``profiler lint``: each rule on a small snippet, the lab's two gateways, and the CLI.

Snippets are written to ``tmp_path`` as small packages, so imports between
their modules resolve as they would in a real app; nothing is imported.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from profiler.errors import InputError
from profiler.lint import LintResult, lint_path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "profiler" / "lab" / "gateway"
HELD_HANDLERS = {
    "list_tools",
    "list_servers",
    "list_resources",
    "list_prompts",
    "get_tool",
    "invoke_tool",
}

DB = """
from collections.abc import Iterator
from typing import Annotated
from fastapi import Depends
from sqlalchemy.orm import Session

SessionLocal = None

def get_db() -> Iterator[Session]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()

Db = Annotated[Session, Depends(get_db)]
"""


def write(root: Path, files: dict[str, str]) -> Path:
    """A package ``app`` under ``root`` with ``files`` (dedented), and ``__init__.py``."""
    package = root / "app"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return package


def lint(tmp_path: Path, files: dict[str, str], **options: tuple[str, ...]) -> LintResult:
    return lint_path(write(tmp_path, files), **options)


def by_handler(result: LintResult) -> dict[str, object]:
    return {finding.handler: finding for finding in result.findings}


def kinds(result: LintResult, handler: str) -> list[str]:
    finding = next(f for f in result.findings if f.handler == handler)
    return [reason.kind for reason in finding.reasons]


# -- session dependencies --------------------------------------------------------------------


def test_direct_depends_held_across_a_client_await_is_an_error(tmp_path: Path) -> None:
    # GIVEN a handler with db = Depends(get_db) that awaits an httpx call
    result = lint(
        tmp_path,
        {
            "api.py": """
            import httpx
            from fastapi import FastAPI, Depends
            from sqlalchemy.orm import Session
            from app.db import get_db

            app = FastAPI()
            client = httpx.AsyncClient()

            @app.post("/pay")
            async def pay(db: Session = Depends(get_db)):
                order = db.get(Order, 1)
                reply = await client.post("/charge", json={})
                return {"ok": True}

            @app.get("/quick")
            async def quick(db: Session = Depends(get_db)):
                db.execute("select 1")
                return {"ok": True}
            """,
            "db.py": DB,
        },
    )
    # THEN pay is an error with the await's line; quick holds a session but is not flagged
    finding = result.findings[0]
    assert [f.handler for f in result.findings] == ["pay"]
    assert finding.severity == "error"
    assert finding.route == "POST /pay"
    assert finding.dependencies == ("get_db",)
    assert [(r.kind, r.line) for r in finding.reasons] == [("downstream-await", 13)]
    assert "client.post" in finding.reasons[0].detail
    assert result.counts()["session_holding"] == 2
    assert result.counts()["holding_across_awaits"] == 1


def test_annotated_alias_in_the_same_module(tmp_path: Path) -> None:
    result = lint(
        tmp_path,
        {
            "api.py": """
            import asyncio
            from typing import Annotated
            from fastapi import APIRouter, Depends
            from sqlalchemy.orm import Session

            def get_session():
                yield None

            Db = Annotated[Session, Depends(get_session)]
            router = APIRouter()

            @router.get("/slow")
            async def slow(db: Db):
                await asyncio.sleep(2)
                return {}
            """
        },
    )
    finding = result.findings[0]
    assert finding.dependencies == ("get_session",)
    assert [(r.kind, r.line) for r in finding.reasons] == [("sleep", 15)]
    assert finding.severity == "error"


def test_imported_alias_resolves_across_modules(tmp_path: Path) -> None:
    # GIVEN Db defined in app/db.py and imported (relative) by app/routes/items.py
    result = lint(
        tmp_path,
        {
            "db.py": DB,
            "routes/__init__.py": "",
            "routes/items.py": """
            from fastapi import APIRouter
            from ..db import Db
            from app import db as dbmod

            router = APIRouter()

            @router.get("/a")
            async def a(db: Db, http_client: object):
                return await http_client.get("https://x")

            @router.get("/b")
            async def b(db: dbmod.Db):
                await dbmod.asyncio_sleep_like()
                return {}
            """,
        },
    )
    findings = by_handler(result)
    assert set(findings) == {"a"}
    assert result.counts()["session_holding"] == 2  # b holds one too, and does nothing slow


def test_nested_dependency_auth_takes_db(tmp_path: Path) -> None:
    # GIVEN authenticate takes db: Db, and the handler only depends on authenticate
    result = lint(
        tmp_path,
        {
            "db.py": DB,
            "auth.py": """
            from typing import Annotated
            from fastapi import Depends, Header
            from app.db import Db

            async def authenticate(db: Db, authorization: str = Header()):
                return db.get(User, 1)

            CurrentUser = Annotated[object, Depends(authenticate)]
            """,
            "api.py": """
            import httpx
            from fastapi import APIRouter
            from app.auth import CurrentUser

            router = APIRouter()

            @router.get("/me")
            async def me(user: CurrentUser, http: httpx.AsyncClient):
                await http.get("/profile")
                return {}
            """,
        },
    )
    finding = result.findings[0]
    assert finding.dependencies == ("authenticate -> get_db",)
    assert kinds(result, "me") == ["downstream-await"]


def test_dependency_that_awaits_is_reported_on_the_handler(tmp_path: Path) -> None:
    result = lint(
        tmp_path,
        {
            "db.py": DB,
            "api.py": """
            from fastapi import APIRouter, Depends
            from app.db import Db

            router = APIRouter()

            async def verify(db: Db, client=None):
                await client.post("/introspect")

            @router.get("/x", dependencies=[Depends(verify)])
            def x():
                return {}
            """,
        },
    )
    finding = result.findings[0]
    assert finding.dependencies == ("verify -> get_db",)
    assert "dependency verify" in finding.reasons[0].detail


def test_router_prefixes_and_include_router(tmp_path: Path) -> None:
    # GIVEN a router with a prefix, included with another prefix, and add_api_route
    result = lint(
        tmp_path,
        {
            "db.py": DB,
            "users.py": """
            import requests
            from fastapi import APIRouter
            from app.db import Db

            router = APIRouter(prefix="/users")

            @router.get("/{user_id}")
            def read_user(user_id: int, db: Db):
                requests.get("https://avatars")
                return {}

            def list_users(db: Db):
                requests.get("https://avatars")

            router.add_api_route("/", list_users, methods=["GET", "HEAD"])
            """,
            "main.py": """
            from fastapi import FastAPI
            from app import users

            API = "/api/v1"
            app = FastAPI()
            app.include_router(users.router, prefix=API)
            """,
        },
    )
    found = by_handler(result)
    assert found["read_user"].route == "GET /api/v1/users/{user_id}"  # type: ignore[attr-defined]
    assert found["list_users"].routes == (  # type: ignore[attr-defined]
        "GET /api/v1/users/",
        "HEAD /api/v1/users/",
    )


def test_sync_handler_calling_requests_while_holding(tmp_path: Path) -> None:
    # GIVEN a sync handler that calls a helper, which calls requests.get
    result = lint(
        tmp_path,
        {
            "db.py": DB,
            "api.py": """
            import time
            from requests import get as fetch
            from fastapi import FastAPI
            from app.db import Db

            app = FastAPI()

            def geocode(address):
                return fetch("https://geo", params={"q": address})

            @app.post("/addresses")
            def add_address(db: Db):
                where = geocode("x")
                time.sleep(1)
                return {"ok": True}
            """,
        },
    )
    finding = result.findings[0]
    assert finding.severity == "error"
    details = [(r.kind, r.line, r.detail) for r in finding.reasons]
    assert details[0][:2] == ("slow-call", 14)
    assert "geocode(...) -> requests.get(...)" in details[0][2]
    assert details[1][:2] == ("slow-call", 15)
    assert "time.sleep" in details[1][2]


def test_configured_session_dependency_and_slow_call(tmp_path: Path) -> None:
    files = {
        "api.py": """
        from fastapi import FastAPI, Depends
        from app.external import legacy_client

        app = FastAPI()

        def database():
            return 1

        @app.get("/x")
        def x(conn=Depends(database)):
            legacy_client.call()
            return {}
        """,
        "external.py": "legacy_client = None\n",
    }
    assert lint(tmp_path, files).findings == ()
    result = lint(
        tmp_path,
        files,
        session_dependencies=("database",),
        slow_calls=("app.external.legacy_client.*",),
    )
    assert kinds(result, "x") == ["slow-call"]


def test_streaming_response_keeps_the_session(tmp_path: Path) -> None:
    result = lint(
        tmp_path,
        {
            "db.py": DB,
            "api.py": """
            from fastapi import FastAPI
            from fastapi.responses import StreamingResponse
            from app.db import Db, get_db
            from fastapi import Depends

            app = FastAPI()

            @app.get("/export")
            def export(db: Db):
                rows = db.execute("select * from big")
                return StreamingResponse(iter(rows))

            @app.get("/export2")
            def export2(db=Depends(get_db, scope="function")):
                return StreamingResponse(iter([]))
            """,
        },
    )
    finding = result.findings[0]
    assert [f.handler for f in result.findings] == ["export"]
    assert [(r.kind, r.line) for r in finding.reasons] == [("streaming", 12)]
    assert finding.severity == "warning"


def test_orm_returned_with_a_response_model(tmp_path: Path) -> None:
    result = lint(
        tmp_path,
        {
            "db.py": DB,
            "models.py": """
            from pydantic import BaseModel
            from sqlalchemy.orm import DeclarativeBase

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"

            class UserOut(BaseModel):
                id: int
            """,
            "api.py": """
            from fastapi import FastAPI
            from app.db import Db
            from app.models import User, UserOut

            app = FastAPI()

            def as_out(db, user_id) -> UserOut:
                return UserOut.model_validate(db.get(User, user_id))

            @app.get("/users/{user_id}", response_model=UserOut)
            def read(user_id: int, db: Db):
                return db.get(User, user_id)

            @app.get("/users", response_model=list[UserOut])
            def listing(db: Db):
                users = db.scalars(select(User)).all()
                return [user for user in users]

            @app.get("/plain/{user_id}", response_model=UserOut)
            def plain(user_id: int, db: Db):
                return as_out(db, user_id)

            @app.get("/raw/{user_id}")
            def raw(user_id: int, db: Db):
                return db.get(User, user_id)

            @app.get("/typed/{user_id}")
            def typed(user_id: int, db: Db) -> User:
                user = db.get(User, user_id)
                return user
            """,
        },
    )
    found = by_handler(result)
    assert set(found) == {"read", "listing", "typed"}
    assert kinds(result, "read") == ["serialisation"]
    assert found["read"].severity == "warning"  # type: ignore[attr-defined]


def test_fixed_pattern_is_not_flagged_but_an_await_inside_the_block_is(tmp_path: Path) -> None:
    result = lint(
        tmp_path,
        {
            "api.py": """
            from fastapi import FastAPI
            from sqlalchemy.orm import Session

            app = FastAPI()
            engine = None

            @app.post("/fixed")
            async def fixed(client: object):
                with Session(engine) as db:
                    tool = dict(name=db.get(Tool, 1).name)
                reply = await client.post("/invoke")
                async with SessionLocal() as db:
                    db.add(Row(reply))
                    return {"tool": tool}

            @app.post("/half-fixed")
            async def half_fixed(client: object):
                with Session(engine) as db:
                    tool = db.get(Tool, 1)
                    reply = await client.post("/invoke")
                return {}
            """,
        },
    )
    finding = result.findings[0]
    assert [f.handler for f in result.findings] == ["half_fixed"]
    assert finding.dependencies == ("with Session(...) (line 19)",)
    assert [(r.kind, r.line) for r in finding.reasons] == [("downstream-await", 21)]
    assert result.counts()["session_holding"] == 0


def test_a_syntax_error_file_is_skipped_with_a_warning(tmp_path: Path, run_cli) -> None:
    package = write(
        tmp_path,
        {
            "db.py": DB,
            "broken.py": "def oops(:\n",
            "api.py": """
            from fastapi import FastAPI
            from app.db import Db
            app = FastAPI()

            @app.get("/x")
            async def x(db: Db, client=None):
                await client.get("/y")
            """,
        },
    )
    result = lint_path(package)
    assert [s.file for s in result.skipped] == ["broken.py"]
    assert "syntax error at line 1" in result.skipped[0].error
    assert [f.handler for f in result.findings] == ["x"]
    cli = run_cli("lint", str(package), "--json")
    assert cli.exit_code == 0, cli.output
    assert "warning: skipped broken.py: syntax error" in cli.stderr
    assert json.loads(cli.stdout)["counts"]["skipped"] == 1


# -- the lab ---------------------------------------------------------------------------------


def test_lab_every_held_handler_flagged_and_no_fresh_one() -> None:
    # GIVEN the lab gateway: held.py (the incident) and fresh.py (the fix)
    result = lint_path(LAB)
    held = {f.handler: f for f in result.findings if f.file == "held.py"}
    # THEN every held handler is flagged, through both of its sessions
    assert set(held) == HELD_HANDLERS
    for finding in held.values():
        assert set(finding.dependencies) == {"authenticate -> get_auth_db", "get_db"}
    # AND invoke_tool is an error whose reason is the downstream await of call_tool -> http.post
    invoke = held["invoke_tool"]
    assert invoke.severity == "error"
    assert invoke.route == "POST /tools/{tool_id}/invoke"
    downstream = [r for r in invoke.reasons if r.kind == "downstream-await"]
    assert len(downstream) == 1
    assert downstream[0].detail.startswith("await call_tool(...) -> await http.post(...)")
    assert "tool_calls.py:" in downstream[0].detail
    # AND no fresh handler (nor the app's /health) is flagged
    assert {f.file for f in result.findings} == {"held.py"}
    fresh = [e for e in result.endpoints if e.file == "fresh.py"]
    assert len(fresh) == 6 and not any(e.holds_session for e in fresh)


# -- the CLI ---------------------------------------------------------------------------------


PROBLEM_MATCHER = re.compile(r"^(.*):(\d+):(\d+): (\w+) (.*)$")  # as an editor's problem matcher


def test_cli_default_is_one_finding_a_line_an_editor_can_parse(run_cli) -> None:
    # GIVEN the lab gateway, linted by path as a user types it, from the repository root
    relative = LAB.relative_to(ROOT)
    # WHEN the default output is read the way an editor's problem matcher reads it
    result = run_cli("lint", str(relative), env={"COLUMNS": "80"})
    document = json.loads(run_cli("lint", str(relative), "--format", "json").stdout)
    # THEN every stdout line matches, names a file that exists from the working directory,
    # and the lines are the JSON findings' (one per rule a handler breaks)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    matches = [PROBLEM_MATCHER.match(line) for line in lines]
    assert lines and all(matches), lines
    parsed = [(m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) for m in matches if m]
    for file, _, column, code in parsed:
        assert (ROOT / file).is_file(), file
        assert column >= 1 and re.fullmatch(r"PRL00[1-6]", code)
    expected = {
        (f"{relative.as_posix()}/{f['file']}", f["line"], f["column"]) for f in document["findings"]
    }
    assert {(file, line, column) for file, line, column, _ in parsed} == expected
    # 6 handlers flagged, each PRL004 and PRL005 (two sessions); invoke_tool PRL001 too
    assert len(parsed) == 13
    invoke = [line for line in lines if "invoke_tool" in line]
    assert [line.split(" ", 2)[1] for line in invoke] == ["PRL001", "PRL004", "PRL005"]
    assert "await call_tool(...) -> await http.post(...)" in invoke[0]
    assert "each request takes 2 sessions at once" in invoke[2]
    # AND the line really points at the handler's def
    for file, line, column, _ in parsed:
        source = (ROOT / file).read_text().splitlines()[line - 1]
        assert source[column - 1 :].startswith(("def ", "async def ")), source
    # AND the summary is talk, on stderr
    assert "13 endpoints in 10 files: 6 hold a DB session, 1 across awaits; 6 flagged" in (
        result.stderr
    )


def test_cli_text_paths_are_relative_to_where_a_file_path_points(run_cli) -> None:
    # GIVEN one file as PATH
    result = run_cli("lint", str(LAB / "held.py"))
    # THEN the paths are that file, not its name alone
    assert result.exit_code == 0, result.output
    files = {PROBLEM_MATCHER.match(line).group(1) for line in result.stdout.splitlines()}
    assert files == {(LAB / "held.py").as_posix()}


def test_cli_github_annotations(run_cli) -> None:
    # GIVEN the lab gateway linted for a GitHub Actions job
    result = run_cli("lint", str(LAB), "--format", "github")
    # THEN each line is a workflow command the runner turns into an annotation
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    command = re.compile(
        r"^::(error|warning) file=([^,:]+),line=(\d+),col=(\d+),title=(PRL00\d)::(.+)$"
    )
    parsed = [command.match(line) for line in lines]
    assert len(lines) == 13 and all(parsed), lines
    levels = {m.group(5): m.group(1) for m in parsed if m}
    assert levels == {"PRL001": "error", "PRL004": "warning", "PRL005": "warning"}
    assert {m.group(2) for m in parsed if m} == {(LAB / "held.py").as_posix()}


def test_github_escaping() -> None:
    from pathlib import PurePath

    from profiler.lint.formats import github_lines
    from profiler.lint.model import Finding, LintResult, Reason

    # GIVEN a finding whose file name and detail hold the runner's special characters
    finding = Finding(
        "a,b:c.py", 3, "h", ("GET /x",), ("get_db",), (Reason("sleep", 4, "50%\nslept"),), 5
    )
    result = LintResult("app", ("a,b:c.py",), (), (finding,), ())
    # WHEN it is rendered as a workflow command
    (line,) = github_lines(result, PurePath("app"))
    # THEN properties escape ',' and ':', the message '%', and nothing is cut
    assert line.startswith("::error file=app/a%2Cb%3Ac.py,line=3,col=5,title=PRL001::")
    assert line.endswith("50%25 slept (line 4)")


def test_cli_table(run_cli) -> None:
    result = run_cli("lint", str(LAB), "--format", "table", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "held.py: 6 endpoints, 6 holding a session, 1 across awaits, 6 flagged" in result.stdout
    assert "fresh.py: 6 endpoints, 0 holding a session, 0 across awaits, 0 flagged" in result.stdout
    assert "invoke_tool" in result.stdout and "call_tool" in result.stdout
    assert "13 endpoints in 10 files: 6 hold a DB session, 1 across awaits; 6 flagged" in (
        result.stdout
    )


def test_cli_json_is_the_documented_document(run_cli) -> None:
    result = run_cli("lint", str(LAB), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"path", "files", "endpoints", "findings", "counts", "skipped"}
    assert document["endpoints"] == 13
    assert document["counts"]["flagged"] == 6
    first = document["findings"][0]
    assert set(first) == {
        "file",
        "line",
        "column",
        "handler",
        "route",
        "routes",
        "dependencies",
        "reasons",
        "severity",
    }
    assert set(first["reasons"][0]) == {"kind", "line", "detail"}
    assert result.stdout == run_cli("lint", str(LAB), "--json").stdout  # stable bytes
    assert result.stdout == run_cli("lint", str(LAB), "--format", "json").stdout  # an alias


def test_cli_sarif_structure(run_cli) -> None:
    result = run_cli("lint", str(LAB), "--format", "sarif")
    assert result.exit_code == 0, result.output
    log = json.loads(result.stdout)
    assert log["version"] == "2.1.0"
    assert "sarif-2.1.0" in log["$schema"]
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] and driver["informationUri"].startswith("https://")
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids)) == 6
    assert run["results"]
    for item in run["results"]:
        assert item["ruleId"] in rule_ids
        assert driver["rules"][item["ruleIndex"]]["id"] == item["ruleId"]
        assert item["level"] in ("error", "warning")
        assert item["message"]["text"]
        location = item["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] in ("held.py",)
        assert location["region"]["startLine"] >= 1
    errors = [r for r in run["results"] if r["level"] == "error"]
    assert len(errors) == 1 and "invoke_tool" in errors[0]["message"]["text"]
    # AND --sarif, from before --format, still prints the same log
    assert run_cli("lint", str(LAB), "--sarif").stdout == result.stdout


@pytest.mark.parametrize(("limit", "code"), [("5", 1), ("6", 0), ("0", 1)])
def test_cli_fail_on(run_cli, limit: str, code: int) -> None:
    result = run_cli("lint", str(LAB), "--fail-on", limit, "--json")
    assert result.exit_code == code, result.output
    if code:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "6 handler(s)" in errors[0]


def test_cli_fail_on_passes_on_the_fix(run_cli) -> None:
    result = run_cli("lint", str(LAB / "fresh.py"), "--fail-on", "0")
    assert result.exit_code == 0, result.output


def test_cli_bad_path_is_exit_7_in_one_line(run_cli, tmp_path: Path) -> None:
    result = run_cli("lint", str(tmp_path / "missing"))
    assert result.exit_code == 7, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0]
    assert "Traceback" not in result.stderr


def test_cli_empty_folder_is_exit_7(run_cli, tmp_path: Path) -> None:
    result = run_cli("lint", str(tmp_path))
    assert result.exit_code == 7, result.output
    assert "no Python file" in result.stderr


@pytest.mark.parametrize(
    "options",
    [("--json", "--sarif"), ("--format", "table", "--json"), ("--format", "json", "--sarif")],
)
def test_cli_two_different_outputs_is_a_usage_error(run_cli, options: tuple[str, ...]) -> None:
    result = run_cli("lint", str(LAB), *options)
    assert result.exit_code == 2, result.output
    assert "ask for different outputs" in result.stderr
    assert result.stdout == ""


def test_cli_unknown_format_is_a_usage_error(run_cli) -> None:
    result = run_cli("lint", str(LAB), "--format", "xml")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr


def test_lint_path_raises_input_error_for_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        lint_path(tmp_path / "nope")


# -- joined with a runtime session -----------------------------------------------------------


def test_report_source_marks_flagged_handlers_seen_holding(tmp_path: Path, run_cli) -> None:
    from tests.test_session_report import build_session

    # GIVEN a recorded session whose asyncio worker held a connection in POST /tools/{id}/invoke
    session = build_session(tmp_path / "session")
    out = tmp_path / "report"
    # WHEN the report is written with the lab's source
    result = run_cli("report", str(session), "-o", str(out), "--source", str(LAB))
    # THEN the page lists lint's flagged handlers, invoke_tool marked as seen holding
    assert result.exit_code == 0, result.output
    page = (out / "index.md").read_text()
    section = page.split("## Handlers flagged by lint", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split(" | ")[0].strip("| `"): line for line in section.splitlines() if "| `" in line
    }
    assert set(rows) == HELD_HANDLERS
    assert rows["invoke_tool"].rstrip(" |").endswith(" s") or "min" in rows["invoke_tool"]
    assert rows["list_tools"].endswith("| no |")
    assert str(LAB) not in page  # no absolute path on the page


def test_report_without_source_has_no_lint_section(tmp_path: Path) -> None:
    from profiler.report.session_report import write_report
    from tests.test_session_report import build_session

    session = build_session(tmp_path / "session")
    write_report(session, tmp_path / "report")
    assert "Handlers flagged by lint" not in (tmp_path / "report" / "index.md").read_text()


def test_seen_holding_matches_by_frame_before_endpoint() -> None:
    from profiler.report.session_report import lint_seen_holding

    result = lint_path(LAB)
    profile = {
        "endpoint POST /tools/{tool_id}/invoke (invoke_tool);invoke_tool (held.py:113)": 700,
        "endpoint GET /tools (list_tools);run (uvicorn/server.py:1)": 300,
    }
    held = dict(
        zip((f.handler for f in result.findings), lint_seen_holding(result, profile), strict=True)
    )
    assert held["invoke_tool"] == 700
    assert held["list_tools"] == 300
    assert held["get_tool"] == 0
