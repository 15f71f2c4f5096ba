"""``profiler lint``: FastAPI handlers that hold a DB session across slow work, found statically.

Runtime sessions (``profiler session run``) find the endpoints that held
connections while they were watched; this finds the rest, in CI, from the
source alone: it parses with :mod:`ast` and never imports the code it reads.

>>> from pathlib import Path
>>> result = lint_path(Path("profiler/lab/gateway"))  # doctest: +SKIP
>>> [f.handler for f in result.findings if f.severity == "error"]  # doctest: +SKIP
['invoke_tool']

:func:`lint_path` is the one entry point; :mod:`profiler.lint.rules` says what
is detected in a handler and how (with :mod:`~profiler.lint.sessions`,
:mod:`~profiler.lint.slow`, :mod:`~profiler.lint.calls`, :mod:`~profiler.lint.returns`),
:mod:`profiler.lint.middleware` what in a middleware, :mod:`profiler.lint.model` what
comes out.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from profiler.errors import InputError
from profiler.lint.middleware import middleware_findings
from profiler.lint.model import Endpoint, Finding, LintResult, Reason, Skipped
from profiler.lint.project import load, python_files
from profiler.lint.routes import find_routes
from profiler.lint.rules import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_SESSION_DEPENDENCIES,
    DEFAULT_SLOW_CALLS,
    Analyzer,
    Settings,
)

__all__ = [
    "DEFAULT_SESSION_DEPENDENCIES",
    "DEFAULT_SLOW_CALLS",
    "Endpoint",
    "Finding",
    "LintResult",
    "Reason",
    "Settings",
    "Skipped",
    "lint_path",
]


def lint_path(
    path: Path,
    *,
    session_dependencies: tuple[str, ...] = (),
    slow_calls: tuple[str, ...] = (),
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> LintResult:
    """Lint every Python file under ``path`` (a folder or one file).

    ``session_dependencies`` and ``slow_calls`` add to the defaults
    (:data:`DEFAULT_SESSION_DEPENDENCIES`, :data:`DEFAULT_SLOW_CALLS`: fnmatch
    patterns on qualified names), so a project's own names never silence the
    common ones. A file that cannot be read or parsed is listed in
    ``skipped`` and the rest is linted; a ``path`` that does not exist, cannot
    be read or holds no Python file is an :class:`~profiler.errors.InputError`
    (exit 7): a CI gate must not pass because it read nothing.
    """
    if not path.exists():
        raise InputError(f"{path} does not exist", hint="pass the folder of your FastAPI app")
    try:
        next(iter(python_files(path)))
    except StopIteration:
        raise InputError(
            f"no Python file under {path}", hint="pass the folder of your FastAPI app"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", hint=None) from None
    project = load(path)
    if path.is_file() and project.skipped and not project.modules:
        only = project.skipped[0]
        if not only.error.startswith("syntax error"):
            raise InputError(f"cannot read {path}: {only.error}", hint="check its permissions")
    settings = Settings(
        session_dependencies=tuple(
            dict.fromkeys((*DEFAULT_SESSION_DEPENDENCIES, *session_dependencies))
        ),
        slow_calls=tuple(dict.fromkeys((*DEFAULT_SLOW_CALLS, *slow_calls))),
        max_depth=max_depth,
    )
    table = find_routes(project)
    analyzer = Analyzer(project, table, settings)
    endpoints: dict[tuple[str, int, str], Endpoint] = {}
    findings: dict[tuple[str, int, str], Finding] = {}
    for route in table.routes:
        endpoint, finding = analyzer.analyse(route)
        key = (endpoint.file, endpoint.line, endpoint.handler)
        endpoints[key] = _merge_endpoint(endpoints.get(key), endpoint)
        if finding is not None:
            findings[key] = _merge_finding(findings.get(key), finding)
    for finding in middleware_findings(project, analyzer.sessions):
        findings[(finding.file, finding.line, finding.handler)] = finding
    return LintResult(
        path=str(path),
        files=tuple(sorted(module.rel for module in project.modules)),
        endpoints=tuple(endpoints[key] for key in sorted(endpoints)),
        findings=tuple(findings[key] for key in sorted(findings)),
        skipped=tuple(Skipped(s.rel, s.error) for s in sorted(project.skipped, key=_rel)),
    )


def _rel(skipped: object) -> str:
    return str(getattr(skipped, "rel", ""))


def _merge_endpoint(old: Endpoint | None, new: Endpoint) -> Endpoint:
    """One handler registered on several routes is one endpoint with all its routes."""
    if old is None:
        return new
    return replace(
        new,
        routes=tuple(sorted({*old.routes, *new.routes})),
        dependencies=tuple(dict.fromkeys((*old.dependencies, *new.dependencies))),
    )


def _merge_finding(old: Finding | None, new: Finding) -> Finding:
    if old is None:
        return new
    reasons = sorted({*old.reasons, *new.reasons}, key=lambda r: (r.line, r.kind, r.detail))
    return replace(
        new,
        routes=tuple(sorted({*old.routes, *new.routes})),
        dependencies=tuple(dict.fromkeys((*old.dependencies, *new.dependencies))),
        reasons=tuple(reasons),
    )
