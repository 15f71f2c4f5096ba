"""What ``profiler lint`` found, as typed records, and their JSON and SARIF documents.

The JSON document is a contract (``../../docs/reference/lint.md``): sorted
keys, paths relative to PATH with ``/`` separators, findings sorted by file
and line, so the same source gives the same bytes and CI diffs stay quiet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler import __version__

DOWNSTREAM = "downstream-await"
SLEEP = "sleep"
SLOW_CALL = "slow-call"
STREAMING = "streaming"
SERIALISATION = "serialisation"
SESSIONS = "sessions-per-request"
CALL_NEXT = "call-next"

AWAIT_KINDS = frozenset({DOWNSTREAM, SLEEP})
ERROR_KINDS = frozenset({DOWNSTREAM, SLEEP, SLOW_CALL, CALL_NEXT})
KIND_ORDER = (CALL_NEXT, DOWNSTREAM, SLEEP, SLOW_CALL, SESSIONS, STREAMING, SERIALISATION)

INFORMATION_URI = "https://github.com/profiler/profiler/blob/main/docs/reference/lint.md"


@dataclass(frozen=True, slots=True)
class Rule:
    """A SARIF rule: one per way a session is held across slow work."""

    id: str
    name: str
    kinds: frozenset[str]
    level: str
    short: str
    full: str


RULES = (
    Rule(
        "PRL001",
        "session-held-across-await",
        frozenset({DOWNSTREAM, SLEEP}),
        "error",
        "DB session held across an await of a downstream call or a sleep",
        "The handler receives a database session through a dependency and awaits a network "
        "call (or a sleep) while it is open: the connection sits idle in transaction for the "
        "whole wait. Move the await out of the session: use short-lived sessions around the "
        "queries only.",
    ),
    Rule(
        "PRL002",
        "session-held-across-slow-call",
        frozenset({SLOW_CALL}),
        "error",
        "DB session held across a slow blocking call",
        "The handler receives a database session through a dependency and makes a blocking "
        "slow call (requests, time.sleep, subprocess, ...) while it is open.",
    ),
    Rule(
        "PRL003",
        "session-held-while-streaming",
        frozenset({STREAMING}),
        "warning",
        "DB session held while a streaming response is sent",
        "FastAPI closes generator dependencies after the response is sent: a streaming "
        "response keeps the session (and its connection) for the whole stream.",
    ),
    Rule(
        "PRL004",
        "session-held-while-serialising",
        frozenset({SERIALISATION}),
        "warning",
        "ORM objects serialised after the handler, inside the request's session",
        "The handler returns ORM objects that FastAPI serialises through the response model "
        "after the handler returns, with the session still open (and expired attributes "
        "reloaded on a connection checked out again). Build plain data inside a short "
        "session instead.",
    ),
    Rule(
        "PRL005",
        "sessions-per-request",
        frozenset({SESSIONS}),
        "warning",
        "One request holds two or more DB sessions at once",
        "The handler's dependencies lead to two or more different session dependencies "
        "(FastAPI caches a dependency per request by callable, so two functions are two "
        "sessions), e.g. an auth dependency on its own get_auth_db next to the handler's "
        "get_db: each request can hold two connections, and a pool of 10 serves at most 5 "
        "requests at once. Share one session dependency.",
    ),
    Rule(
        "PRL006",
        "middleware-session-across-call-next",
        frozenset({CALL_NEXT}),
        "error",
        "Middleware holds a DB session across call_next",
        "A middleware opens a database session and awaits the rest of the request "
        "(call_next, or the wrapped ASGI app) while it is open: every request holds that "
        "connection for its whole duration, besides the one its handler takes. Close the "
        "session before calling the next layer.",
    ),
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One thing the handler does while its session is open, at a line of the handler's file."""

    kind: str
    line: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "line": self.line, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A route handler, whether or not it holds a session."""

    file: str
    line: int
    handler: str
    routes: tuple[str, ...]
    dependencies: tuple[str, ...]
    """Session dependency chains (``authenticate -> get_auth_db``); empty: no session held."""

    @property
    def route(self) -> str:
        return self.routes[0] if self.routes else ""

    @property
    def holds_session(self) -> bool:
        return bool(self.dependencies)


@dataclass(frozen=True, slots=True)
class Finding:
    """A handler flagged: it holds a session while doing what ``reasons`` say."""

    file: str
    line: int
    handler: str
    routes: tuple[str, ...]
    dependencies: tuple[str, ...]
    reasons: tuple[Reason, ...]
    column: int = 1
    """1-based column of the handler's ``def`` (``async def``), for editors and CI annotations."""

    @property
    def route(self) -> str:
        return self.routes[0] if self.routes else ""

    @property
    def severity(self) -> str:
        return "error" if any(r.kind in ERROR_KINDS for r in self.reasons) else "warning"

    @property
    def across_awaits(self) -> bool:
        return any(r.kind in AWAIT_KINDS for r in self.reasons)

    def messages(self) -> list[tuple[Rule, str, tuple[Reason, ...]]]:
        """One message per rule the handler breaks: the rule, its one-line text, its reasons.

        The SARIF results, the ``path:line:col: CODE message`` lines and the
        GitHub annotations are all built from these, so they say the same thing.
        """
        found = []
        for rule in RULES:
            reasons = tuple(r for r in self.reasons if r.kind in rule.kinds)
            if not reasons:
                continue
            route = f" ({self.route})" if self.route else ""
            via = f" via {', '.join(self.dependencies)}" if self.dependencies else ""
            text = f"{self.handler}{route} holds a DB session{via}: " + "; ".join(
                f"{r.detail} (line {r.line})" for r in reasons
            )
            found.append((rule, text, reasons))
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "handler": self.handler,
            "route": self.route,
            "routes": list(self.routes),
            "dependencies": list(self.dependencies),
            "reasons": [reason.to_json() for reason in self.reasons],
            "severity": self.severity,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file left out (unreadable, not UTF-8, or a syntax error), with why."""

    file: str
    error: str


@dataclass(frozen=True, slots=True)
class FileCounts:
    file: str
    endpoints: int
    session_holding: int
    across_awaits: int
    flagged: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "endpoints": self.endpoints,
            "session_holding": self.session_holding,
            "holding_across_awaits": self.across_awaits,
            "flagged": self.flagged,
        }


@dataclass(frozen=True, slots=True)
class LintResult:
    """Everything one run found under PATH."""

    path: str
    files: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]
    findings: tuple[Finding, ...]
    skipped: tuple[Skipped, ...]

    def per_file(self) -> list[FileCounts]:
        """Counts for every file read, in file order."""
        rows = []
        for file in self.files:
            endpoints = [e for e in self.endpoints if e.file == file]
            findings = [f for f in self.findings if f.file == file]
            rows.append(
                FileCounts(
                    file,
                    len(endpoints),
                    sum(e.holds_session for e in endpoints),
                    sum(f.across_awaits for f in findings),
                    len(findings),
                )
            )
        return rows

    def counts(self) -> dict[str, int]:
        return {
            "files": len(self.files),
            "skipped": len(self.skipped),
            "endpoints": len(self.endpoints),
            "session_holding": sum(e.holds_session for e in self.endpoints),
            "holding_across_awaits": sum(f.across_awaits for f in self.findings),
            "flagged": len(self.findings),
            "errors": sum(f.severity == "error" for f in self.findings),
            "warnings": sum(f.severity == "warning" for f in self.findings),
        }

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (see the reference for every field)."""
        return {
            "path": self.path,
            "files": [row.to_json() for row in self.per_file()],
            "endpoints": len(self.endpoints),
            "findings": [finding.to_json() for finding in self.findings],
            "counts": self.counts(),
            "skipped": [{"file": s.file, "error": s.error} for s in self.skipped],
        }

    def to_sarif(self) -> dict[str, Any]:
        """A SARIF 2.1.0 log: one result per flagged handler and rule, at the handler's line.

        URIs are relative to PATH (``uriBaseId`` ``%SRCROOT%``): run the lint on
        the repository root for GitHub code scanning to place them.
        """
        results = []
        for finding in self.findings:
            for rule, text, reasons in finding.messages():
                results.append(
                    {
                        "ruleId": rule.id,
                        "ruleIndex": RULES.index(rule),
                        "level": rule.level,
                        "message": {"text": text},
                        "locations": [_location(finding.file, finding.line, finding.column)],
                        "relatedLocations": [
                            {
                                "id": number,
                                **_location(finding.file, reason.line),
                                "message": {"text": reason.detail},
                            }
                            for number, reason in enumerate(reasons, 1)
                        ],
                        "partialFingerprints": {
                            "handler/v1": f"{finding.file}:{finding.handler}:{rule.id}"
                        },
                    }
                )
        return {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "profiler lint",
                            "version": __version__,
                            "informationUri": INFORMATION_URI,
                            "rules": [
                                {
                                    "id": rule.id,
                                    "name": rule.name,
                                    "shortDescription": {"text": rule.short},
                                    "fullDescription": {"text": rule.full},
                                    "defaultConfiguration": {"level": rule.level},
                                    "helpUri": INFORMATION_URI,
                                }
                                for rule in RULES
                            ],
                        }
                    },
                    "columnKind": "unicodeCodePoints",
                    "results": results,
                }
            ],
        }


def _location(file: str, line: int, column: int | None = None) -> dict[str, Any]:
    region = {"startLine": line} if column is None else {"startLine": line, "startColumn": column}
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": file, "uriBaseId": "%SRCROOT%"},
            "region": region,
        }
    }
