"""Code paths: a collapsed stack reduced to the application's frames and what they called.

A stack from a web worker is mostly framework: ``run (uvicorn/server.py:63)``,
a dozen asyncio and starlette frames, then the handler, then a library
(httpx, SQLAlchemy) and the standard library under it. What a reader wants
to know is *which of our functions* it was and *what it was waiting on*, so
a code path keeps

* the application's frames (the innermost ``max_frames`` of them), and
* the *downstream call*: the first frame called from the last application
  frame (``post (httpx/_client.py:1859)``), whatever library it belongs to,

shown outermost first, joined by ``" → "``::

    invoke_tool (held.py:120) → call_tool (tool_calls.py:49) → post (httpx/_client.py:1859)

A stack with no application frame at all (the event loop idle in
``select``) keeps its innermost ``max_frames`` frames instead.

Which frames are "the application's" is decided from the file in the label,
since a collapsed stack carries nothing else. The heuristic, in order:

1. No Python file (a bare name, a native frame's ``libc.so.6``, code
   generated with ``exec`` such as ``<string>``): not application.
2. ``<frozen ...>``, or a path containing ``site-packages/`` or
   ``dist-packages/``: not application.
3. An absolute path under this interpreter's ``sysconfig`` stdlib, purelib or
   platlib folders, or containing ``/lib/pythonX.Y/`` (another interpreter's
   standard library, say inside a container): not application.
4. A relative path (py-spy's ``short_filename`` strips the ``sys.path``
   entry, so ``httpx/_client.py``, ``asyncio/base_events.py``,
   ``profiler/lab/gateway/held.py``, or just ``held.py``): its first
   component, without ``.py``, names a top-level module; a standard library
   module (``sys.stdlib_module_names``: ``selectors.py``, ``threading.py``,
   ``asyncio/...``, ``concurrent/futures/...``) or a well-known third-party
   package (:data:`LIBRARIES`, plus any the caller passes) is not
   application.
5. Anything else is application.

Known limits: an application module that shares a standard library module's
name (``types.py``, ``queue.py``) shows up as a library when py-spy gives only
its bare name; an unknown third-party package given by a short name counts as
application (pass it in ``libraries``).
"""

from __future__ import annotations

import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import NamedTuple

from profiler.analysis.collapsed import frames as stack_frames
from profiler.analysis.collapsed import split_label

ARROW = " → "

LIBRARIES = frozenset(
    {
        "aiohttp",
        "anyio",
        "asgiref",
        "asyncpg",
        "attr",
        "attrs",
        "certifi",
        "click",
        "django",
        "fastapi",
        "flask",
        "gevent",
        "granian",
        "greenlet",
        "grpc",
        "gunicorn",
        "h11",
        "h2",
        "httpcore",
        "httptools",
        "httpx",
        "hypercorn",
        "idna",
        "jinja2",
        "multidict",
        "numpy",
        "orjson",
        "pandas",
        "pip",
        "pkg_resources",
        "psycopg",
        "psycopg2",
        "psycopg_pool",
        "pydantic",
        "pydantic_core",
        "redis",
        "requests",
        "rloop",
        "setuptools",
        "sniffio",
        "sqlalchemy",
        "sqlmodel",
        "starlette",
        "typer",
        "typing_extensions",
        "urllib3",
        "uvicorn",
        "uvicorn_worker",
        "uvloop",
        "watchfiles",
        "websockets",
        "werkzeug",
        "yarl",
    }
)
"""Top-level packages read as third-party when py-spy names their files relative."""

_MARKERS = ("site-packages/", "dist-packages/", "<frozen")
_STDLIB_PATH = re.compile(r"(^|/)lib(64)?/python\d+(\.\d+)?t?/")
_PYTHON_FILE = re.compile(r"\.(py|pyx|pyi)$|^<frozen")


ENDPOINT_PREFIX = "endpoint "  # a stack's root frame naming the request it served
NO_FRAMES = "(no frame sampled)"
FALLBACK_ROOT = "worker fallback (no task seen holding the connection)"
"""A stack's root frame when its held time was attributed to the worker's activity, not
to the task that held the connection (:mod:`profiler.analysis.attribution`)."""
FALLBACK_LABEL = "(worker fallback) "


class CodePath(NamedTuple):
    """A stack's code path: the application frames kept, the downstream call, the display,
    the request's endpoint when the stack's root frame names it (task samples), and
    whether its time came from the worker fallback (the display then starts with
    :data:`FALLBACK_LABEL`, so no table or title passes it off as the holder)."""

    frames: list[str]
    downstream: str | None
    display: str
    endpoint: str | None = None
    fallback: bool = False


def is_application(label: str, *, libraries: Collection[str] = ()) -> bool:
    """Whether a frame label is the application's own code (see the module docstring).

    >>> is_application("invoke_tool (profiler/lab/gateway/held.py:118)")
    True
    >>> is_application("post (httpx/_client.py:1859)")
    False
    >>> is_application("select (selectors.py:468)")
    False
    """
    return _is_application(split_label(label).file, frozenset(libraries))


@lru_cache(maxsize=4096)
def _is_application(file: str, libraries: frozenset[str]) -> bool:
    path = file.replace("\\", "/")
    if not path or not _PYTHON_FILE.search(path):
        return False
    if any(marker in path for marker in _MARKERS):
        return False
    if path.startswith("/") or re.match(r"^[A-Za-z]:/", path):
        return not (
            any(path.startswith(prefix) for prefix in _library_prefixes())
            or _STDLIB_PATH.search(path)
        )
    if _STDLIB_PATH.search(path):
        return False
    top = path.split("/", 1)[0].removesuffix(".py")
    return not (top in sys.stdlib_module_names or top in LIBRARIES or top in libraries)


@lru_cache(maxsize=1)
def _library_prefixes() -> tuple[str, ...]:
    """This interpreter's stdlib and site-packages folders, each ending in ``/``."""
    paths = sysconfig.get_paths()
    found = {
        paths[name].replace("\\", "/").rstrip("/") + "/"
        for name in ("stdlib", "platstdlib", "purelib", "platlib")
        if paths.get(name)
    }
    return tuple(sorted(found))


def application_frames(stack: str, *, libraries: Collection[str] = ()) -> list[str]:
    """The labels of ``stack``'s application frames, outermost first.

    >>> application_frames(
    ...     "run (uvicorn/server.py:63);invoke_tool (held.py:118);post (httpx/_client.py:1859)"
    ... )
    ['invoke_tool (held.py:118)']
    """
    known = frozenset(libraries)
    return [
        label for label in stack_frames(stack) if _is_application(split_label(label).file, known)
    ]


def describe(stack: str, *, max_frames: int = 4, libraries: Collection[str] = ()) -> CodePath:
    """``stack``'s :class:`CodePath`: up to ``max_frames`` application frames (the
    innermost ones) plus the downstream call, or the innermost ``max_frames``
    frames when no frame is the application's."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, not {max_frames}")
    labels = stack_frames(stack)
    endpoint = None
    fallback = bool(labels) and labels[0] == FALLBACK_ROOT
    if fallback:
        labels = labels[1:]
    if labels and labels[0].startswith(ENDPOINT_PREFIX):
        endpoint, labels = labels[0][len(ENDPOINT_PREFIX) :], labels[1:]
    known = frozenset(libraries)
    mine = [i for i, label in enumerate(labels) if _is_application(split_label(label).file, known)]
    if not mine:
        kept = labels[-max_frames:]
        return CodePath(kept, None, _display(endpoint, kept, fallback), endpoint, fallback)
    kept = [labels[i] for i in mine[-max_frames:]]
    after = mine[-1] + 1
    downstream = labels[after] if after < len(labels) else None
    shown = [*kept, downstream] if downstream is not None else kept
    return CodePath(kept, downstream, _display(endpoint, shown, fallback), endpoint, fallback)


def is_application_file(file: str, libraries: Collection[str] = ()) -> bool:
    """Whether ``file`` (a stack label's file) is the application's, by the heuristic of
    the module docstring.

    >>> is_application_file("profiler/lab/gateway/held.py"), is_application_file("fastapi/x.py")
    (True, False)
    """
    return _is_application(file, frozenset(libraries))


def _display(endpoint: str | None, labels: list[str], fallback: bool = False) -> str:
    """``POST /tools/{tool_id}/invoke (invoke_tool): a → b``; without an endpoint, ``a → b``;
    a stack with no frame (a task sampled between two steps) says so rather than print an
    empty path."""
    path = ARROW.join(labels) or NO_FRAMES
    shown = f"{endpoint}: {path}" if endpoint else path
    return FALLBACK_LABEL + shown if fallback else shown


def code_path(stack: str, *, max_frames: int = 4, libraries: Collection[str] = ()) -> str:
    """The display string of ``stack``'s code path (see :func:`describe`).

    >>> code_path(
    ...     "run (uvicorn/server.py:63);invoke_tool (held.py:120);"
    ...     "call_tool (tool_calls.py:49);post (httpx/_client.py:1859);"
    ...     "request (httpx/_client.py:1540)"
    ... )
    'invoke_tool (held.py:120) → call_tool (tool_calls.py:49) → post (httpx/_client.py:1859)'
    """
    return describe(stack, max_frames=max_frames, libraries=libraries).display


def short_names(path: CodePath) -> str:
    """The path by function names only, for titles: ``invoke_tool → call_tool → post``."""
    shown = [*path.frames, path.downstream] if path.downstream is not None else path.frames
    names = ARROW.join(split_label(label).name for label in shown)
    named = f"{path.endpoint}: {names}" if path.endpoint else names
    return FALLBACK_LABEL + named if path.fallback else named


def group_by_path(
    profile: Mapping[str, int], *, max_frames: int = 4, libraries: Collection[str] = ()
) -> list[tuple[str, int, list[str]]]:
    """Stacks summed by code path: ``(display, total, frames)``, heaviest first (ties by
    display). ``frames`` are the path's application frames (see :class:`CodePath`);
    stacks with a zero or negative count are left out."""
    totals: Counter[str] = Counter()
    kept: dict[str, list[str]] = {}
    for stack, count in profile.items():
        if count <= 0:
            continue
        path = describe(stack, max_frames=max_frames, libraries=libraries)
        totals[path.display] += count
        kept.setdefault(path.display, path.frames)
    ordered = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [(display, total, kept[display]) for display, total in ordered]
