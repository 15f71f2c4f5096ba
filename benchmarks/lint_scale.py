"""What ``profiler lint`` costs on a big gateway: 300 modules, 3,000 handlers.

A synthetic FastAPI codebase is written to a temporary folder: a ``core``
package (``db.py`` with ``get_db`` and the ``Db`` alias, ``auth.py`` whose
``authenticate`` takes ``db: Db``, ``clients.py`` whose ``call_downstream``
awaits ``http.post``), and route modules under ``routes/``, each an
``APIRouter(prefix=...)`` included by ``main.py`` with ``/api/v1``. Handlers
cycle through a realistic mix: ``Depends(get_db)`` then awaiting the
downstream helper, the imported ``Db`` alias returning ORM rows with a
``response_model``, the nested auth dependency around an ``asyncio.sleep``,
a sync handler calling ``requests.get``, a ``StreamingResponse``, the fixed
pattern (short ``with SessionLocal()`` blocks, await outside), a quick
session-holding handler doing nothing slow, and one without a database.

The lint runs in-process (``lint_path``, as the CLI calls it) and the script
prints files, handlers, findings, seconds and peak RSS (``getrusage``).
Goal: seconds, not minutes.

Run: python benchmarks/lint_scale.py [--modules 300] [--handlers 3000] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

CORE = {
    "__init__.py": "",
    "db.py": """
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


Db = Annotated[Session, Depends(get_db)]
""",
    "auth.py": """
from typing import Annotated

from fastapi import Depends, Header

from .db import Db


def authenticate(db: Db, authorization: str = Header()) -> dict[str, int]:
    return {"id": 1}


CurrentUser = Annotated[dict[str, int], Depends(authenticate)]
""",
    "clients.py": """
import httpx

http = httpx.AsyncClient()


async def call_downstream(name: str) -> dict[str, str]:
    response = await http.post("/invoke", json={"name": name})
    return response.json()
""",
    "models.py": """
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
""",
}

HEADER = """
import asyncio

import requests
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.auth import CurrentUser
from app.core.clients import call_downstream
from app.core.db import Db, SessionLocal, get_db
from app.core.models import Item

router = APIRouter(prefix="/m{module}")
"""

HANDLERS = (
    """
@router.post("/h{n}")
async def h{n}(db: Session = Depends(get_db)):
    item = db.get(Item, 1)
    reply = await call_downstream("x")
    return {{"reply": reply}}
""",
    """
@router.get("/h{n}", response_model=list[dict])
async def h{n}(db: Db):
    return db.scalars(select(Item)).all()
""",
    """
@router.get("/h{n}")
async def h{n}(user: CurrentUser):
    await asyncio.sleep(0.1)
    return user
""",
    """
@router.get("/h{n}")
def h{n}(db: Db):
    requests.get("https://example.invalid")
    return {{}}
""",
    """
@router.get("/h{n}")
def h{n}(db: Db):
    return StreamingResponse(iter(()))
""",
    """
@router.post("/h{n}")
async def h{n}():
    with SessionLocal() as db:
        name = db.get(Item, 1).name
    reply = await call_downstream(name)
    with SessionLocal() as db:
        db.add(Item())
        db.commit()
    return {{"reply": reply}}
""",
    """
@router.get("/h{n}")
async def h{n}(db: Db):
    db.execute(select(Item))
    return {{"ok": True}}
""",
    """
@router.get("/h{n}")
async def h{n}():
    return {{"ok": True}}
""",
)


def generate(root: Path, modules: int, handlers: int) -> Path:
    """The synthetic app under ``root/app``; returns its folder."""
    app = root / "app"
    (app / "core").mkdir(parents=True)
    (app / "routes").mkdir()
    (app / "__init__.py").write_text("")
    (app / "routes" / "__init__.py").write_text("")
    for name, text in CORE.items():
        (app / "core" / name).write_text(text.lstrip())
    route_modules = modules - len(CORE) - 3  # app/__init__, routes/__init__, main
    includes = []
    count = 0
    for module in range(route_modules):
        parts = [HEADER.format(module=module)]
        share = handlers // route_modules + (module < handlers % route_modules)
        for _ in range(share):
            parts.append(HANDLERS[count % len(HANDLERS)].format(n=count))
            count += 1
        (app / "routes" / f"r{module}.py").write_text("\n".join(parts).lstrip())
        includes.append(f"app.include_router(r{module}.router, prefix='/api/v1')")
    imports = "\n".join(f"from app.routes import r{m}" for m in range(route_modules))
    (app / "main.py").write_text(
        f"from fastapi import FastAPI\n\n{imports}\n\napp = FastAPI()\n"
        + "\n".join(includes)
        + "\n"
    )
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=300)
    parser.add_argument("--handlers", type=int, default=3000)
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = parser.parse_args()

    from profiler.lint import lint_path

    root = Path(tempfile.mkdtemp(prefix="lint-scale-"))
    try:
        begun = time.perf_counter()
        app = generate(root, args.modules, args.handlers)
        generated = time.perf_counter() - begun
        files = sum(1 for _ in app.rglob("*.py"))
        begun = time.perf_counter()
        result = lint_path(app)
        seconds = time.perf_counter() - begun
        counts = result.counts()
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"generated {files} files in {generated:.2f} s under {app}")
        print(f"files     {counts['files']}")
        print(f"handlers  {counts['endpoints']}")
        print(f"holding   {counts['session_holding']}")
        print(
            f"findings  {counts['flagged']} ({counts['errors']} errors, "
            f"{counts['warnings']} warnings)"
        )
        print(f"seconds   {seconds:.2f}")
        print(f"peak RSS  {peak_mib:.0f} MiB")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
