"""The Diagnosis: the causes behind a session's findings, ranked, each with its mechanism,
the code to change and the fix.

Findings are symptoms, one rule each (idle in transaction, a pool at its cap,
a loop blocked in a checkout). A reader acting on them has to build the story;
the Diagnosis builds it. It reads the findings, the held time of the task that
held each connection classified by what it was doing
(:mod:`profiler.analysis.hold_classes`), and the connections each request held
at once (:mod:`profiler.analysis.requests`), and returns at most
:data:`MAX_CAUSES` :class:`Cause` records, ranked:

0. a worker OOM-killed or near its memory limit (``oom-kill``, ``memory-growth``:
   :mod:`profiler.analysis.memory_cause`): a killed worker is the worst harm, and
   the cause names the endpoint whose memory it was;
1. the causes that held connections (``session-held-across-await``,
   ``held-across-serialisation``, ``streaming-holds-session``,
   ``middleware-session-across-call-next``), by connection-seconds held;
2. ``two-connections-per-request``: it multiplies what the first holds;
3. ``sync-db-in-async``: a sync session on the event loop, which turns an
   empty pool into a stopped worker (first when nothing held connections).

A cause needs harm as well as a pattern: a holding class counts only when
transactions sat idle in transaction beyond the threshold or a pool reached
its cap; a session with neither has no cause, whatever its stacks. Pure: the
caller passes what :func:`profiler.session.summary.summarize` computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from profiler import units
from profiler.analysis.code_paths import CodePath, describe, short_names
from profiler.analysis.collapsed import split_label
from profiler.analysis.findings.common import _plural
from profiler.analysis.hold_classes import ClassHold, held_by_class
from profiler.analysis.loop_waits import loop_database_waits
from profiler.analysis.memory_cause import memory_cause
from profiler.analysis.requests import EndpointConnections, connections_per_request

if TYPE_CHECKING:
    import pandas as pd

    from profiler.analysis.findings import Finding
    from profiler.analysis.findings.pool import PoolFigures
    from profiler.analysis.memory_cause import WorkerPeak

MAX_CAUSES = 3
MIN_HELD_SECONDS = 1.0  # a holding class below this many connection-seconds is no cause
MIN_HELD_SHARE = 0.2  # ...nor below this share of the task-attributed held time
MIN_MULTI_ROUNDS = 3  # request rounds seen holding two connections or more
MIN_MULTI_SHARE = 0.1  # of the endpoint's request rounds that held any
MIN_LOOP_DB_SHARE = 0.3  # of a worker's loop samples idle in a database call
MIN_LOOP_DB_SAMPLES = 3
FIX_LINK = "how-to/fix-with-short-sessions.md"


@dataclass(frozen=True, slots=True)
class Where:
    """A place in the code: ``role`` is ``handler``, ``dependency``, ``middleware`` or
    ``slow call``."""

    file: str
    line: int
    function: str
    role: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function, "role": self.role}

    def label(self) -> str:
        """``invoke_tool (profiler/lab/gateway/held.py:113)``."""
        return f"{self.function} ({self.file}:{self.line})"


@dataclass(frozen=True, slots=True)
class Cause:
    """One cause: what (``mechanism``, each step with the session's figures), where,
    the fix and its how-to, the findings that back it (``evidence``: rule ids)."""

    cause: str
    title: str
    mechanism: list[str]
    where: list[Where]
    fix: str
    fix_link: str
    evidence: list[str]
    severity: str

    def to_json(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "title": self.title,
            "mechanism": list(self.mechanism),
            "where": [w.to_json() for w in self.where],
            "fix": self.fix,
            "fix_link": self.fix_link,
            "evidence": list(self.evidence),
            "severity": self.severity,
        }


@dataclass(frozen=True, slots=True)
class DiagnosisInput:
    """What :func:`diagnose` reads: the findings, the task-attributed held time per
    transaction (``per_episode``), the task samples, each worker's pool, the load."""

    findings: list[Finding]
    per_episode: pd.DataFrame | None
    tasks: pd.DataFrame
    pools: list[PoolFigures] = field(default_factory=list)
    served_rps: float | None = None
    load_errors: int | None = None
    wait_samples: pd.DataFrame | None = None  # py-spy thread samples
    memory_peaks: list[WorkerPeak] = field(default_factory=list)  # memray, per worker
    rss: pd.DataFrame | None = None  # the RSS timeline


HOLDING = {
    "await": (
        "session-held-across-await",
        "Open the session only around the queries: read what the call needs into plain "
        "values, let the session end (commit, close: the connection goes back to the pool), "
        "await the slow call with no connection checked out, then open a new short session "
        "to write the result.",
    ),
    "serialisation": (
        "held-across-serialisation",
        "Build the response from plain values while the session is open (dicts or Pydantic "
        "models, no ORM objects), end the session in the handler, and let FastAPI serialise "
        "after it: a yield dependency's session lives until the response is sent.",
    ),
    "streaming": (
        "streaming-holds-session",
        "Read the rows into memory (or page through them with a short session per page) "
        "before streaming; never keep a session open inside the generator a "
        "StreamingResponse iterates.",
    ),
    "middleware": (
        "middleware-session-across-call-next",
        "Let the middleware end its session before `await call_next(request)` (do its query "
        "in a short `with Session() as db:` block), or move the work into a dependency of "
        "the endpoints that need it.",
    ),
}


def diagnose(given: DiagnosisInput) -> list[Cause]:
    """At most :data:`MAX_CAUSES` causes, ranked (see the module docstring); empty when
    the session shows none."""
    rules = {finding.rule: finding for finding in given.findings}
    harmed = _harm(rules)
    classes = held_by_class(given.per_episode)
    attributed = sum(hold.millis for hold in classes.values()) / 1000
    requests = connections_per_request(given.tasks) if not given.tasks.empty else []
    holding: list[tuple[float, Cause]] = []
    if harmed:
        for name, (cause_id, fix) in HOLDING.items():
            hold = classes.get(name)
            if hold is None:
                continue
            seconds = hold.millis / 1000
            if seconds < MIN_HELD_SECONDS or seconds < MIN_HELD_SHARE * attributed:
                continue
            cause = _holding(cause_id, name, fix, hold, attributed, rules, requests, given)
            holding.append((seconds, cause))
    holding.sort(key=lambda item: (-item[0], item[1].cause))
    memory = memory_cause(given.findings, given.memory_peaks, given.tasks, requests, given.rss)
    causes = ([memory] if memory is not None else []) + [cause for _, cause in holding]
    multi = _two_connections(requests, rules, given)
    if multi is not None:
        causes.append(multi)
    blocked = _sync_db(rules, given)
    if blocked is not None:
        causes.append(blocked)
    return causes[:MAX_CAUSES]


def _harm(rules: dict[str, Finding]) -> bool:
    """Whether connections were held long enough to hurt: idle in transaction beyond the
    threshold, or a pool at its cap (an inferred cap is no evidence)."""
    pool = rules.get("pool-saturation")
    at_cap = pool is not None and not pool.evidence.get("inferred", False)
    return "idle-in-transaction" in rules or at_cap


def _holding(
    cause_id: str,
    name: str,
    fix: str,
    hold: ClassHold,
    attributed: float,
    rules: dict[str, Finding],
    requests: list[EndpointConnections],
    given: DiagnosisInput,
) -> Cause:
    path = _application_path(hold)
    seconds = hold.millis / 1000
    endpoint = path.endpoint
    mine = bool(path.frames) and _is_app_label(path.frames[0])
    handler = _frame_where(path.frames[0], "handler") if mine else None
    slow = _slow_call(path) if mine else None
    what = {
        "await": "sessions held across the downstream call",
        "serialisation": "sessions held while the response is serialised",
        "streaming": "sessions held while the response streams",
        "middleware": "a middleware's session held across `call_next`",
    }[name]
    title = what
    if name == "await" and slow is not None:
        title += f" `{_calls(path)}`"
    if handler is not None:
        title += f" in `{handler.function}` ({handler.file}:{handler.line})"
    elif endpoint is not None:
        title += f" in {endpoint}"
    first = f"{what} ({short_names(path)})"
    if attributed:
        first += (
            f": {units.seconds(seconds)} of {units.seconds(attributed)} connection-seconds held by "
            f"requests ({units.percent(seconds / attributed)})"
        )
    where = [w for w in (handler, slow) if w is not None]
    where = _holders_where(requests, endpoint, where, name)
    evidence: list[str] = [r for r in ("held-code-path", "idle-in-transaction") if r in rules]
    mechanism = [first, *_consequences(rules, given, evidence)]
    return Cause(
        cause=cause_id,
        title=title,
        mechanism=mechanism,
        where=where,
        fix=fix,
        fix_link=FIX_LINK,
        evidence=evidence,
        severity=_severity(rules),
    )


def _application_path(hold: ClassHold) -> CodePath:
    """The code path of the heaviest stack with an application frame (the code a reader
    changes), else of the heaviest stack."""
    ranked = sorted(hold.stacks.items(), key=lambda item: (-item[1], item[0]))
    for stack, _ in ranked:
        path = describe(stack)
        if path.frames and _is_app_label(path.frames[0]):
            return path
    return describe(ranked[0][0])


def _holders_where(
    requests: list[EndpointConnections], endpoint: str | None, where: list[Where], name: str
) -> list[Where]:
    """``where`` with the code that opened the sessions first: the endpoint's yield
    dependencies and middlewares (a middleware cause: its middleware only)."""
    found = next((r for r in requests if r.endpoint == endpoint), None)
    if found is None and requests:
        found = requests[0] if name == "middleware" else None
    if found is None:
        return where
    holders = [
        Where(h.file, h.line, h.function, h.role)
        for h in found.all_holders
        if h.role != "handler" and (name != "middleware" or h.role == "middleware")
    ]
    holders = [h for h in dict.fromkeys(holders) if h not in where]  # each place once
    return [*holders, *where] if name == "middleware" else [*where, *holders]


def _consequences(
    rules: dict[str, Finding], given: DiagnosisInput, evidence: list[str]
) -> list[str]:
    """The chain after a hold: idle in transaction → pool at its cap → loops waiting →
    throughput. Each step with its figures, each finding named in ``evidence``."""
    steps: list[str] = []
    idle = rules.get("idle-in-transaction")
    if idle is not None:
        found = idle.evidence
        steps.append(
            f"{_plural(int(found['episodes']), 'transaction', 'transactions')} idle in "
            f"transaction over {units.seconds(float(found['threshold_seconds']))} "
            f"(max {units.seconds(float(found['max_idle_age']))})"
        )
    pool = rules.get("pool-saturation")
    if pool is not None and not pool.evidence.get("inferred", False):
        rows = pool.evidence.get("workers") or [pool.evidence]
        capped = [r for r in rows if not r.get("inferred", False)]
        share = max(float(r.get("share_at_cap") or 0.0) for r in capped) if capped else 0.0
        steps.append(
            f"pool at its cap of {pool.evidence.get('cap')} on {len(capped)} of "
            f"{max(len(given.pools), len(rows))} workers (up to {units.percent(share)} of the time)"
        )
        evidence.append("pool-saturation")
    loop = rules.get("blocked-event-loop")
    if loop is not None:
        rows = loop.evidence.get("workers") or [loop.evidence]
        share = max(float(r.get("blocked_share") or 0.0) for r in rows)
        steps.append(
            f"event loops wait in a pool checkout up to {units.percent(share)} of the time "
            f"({_plural(len(rows), 'worker', 'workers')}): a sync session on the loop"
        )
        evidence.append("blocked-event-loop")
    throughput = _throughput(given)
    if throughput:
        steps.append(throughput)
    return steps


def _throughput(given: DiagnosisInput) -> str | None:
    if given.served_rps is None:
        return None
    text = f"throughput {units.number(given.served_rps)} req/s"
    if given.load_errors:
        text += f", {given.load_errors} errors"
    ceilings = [
        p.max_rps for p in given.pools if p.max_rps is not None and p.hold_basis == "request"
    ]
    if ceilings:
        text += f" (the pools allow at most {units.number(sum(ceilings))} req/s at this hold time)"
    return text


def _severity(rules: dict[str, Finding]) -> str:
    return "critical" if any(f.severity == "critical" for f in rules.values()) else "warning"


def _two_connections(
    requests: list[EndpointConnections], rules: dict[str, Finding], given: DiagnosisInput
) -> Cause | None:
    candidates = [
        r
        for r in requests
        if r.multi_rounds >= MIN_MULTI_ROUNDS and r.multi_rounds >= MIN_MULTI_SHARE * r.rounds
    ]
    if not candidates:
        return None
    top = candidates[0]
    count = top.typical
    holders = top.holders[:count] or top.holders
    named = " + ".join(h.label() for h in holders) or "holders not named"
    capacity = _capacity(given.pools)
    title = f"each request to {top.route} takes {count} connections ({named})"
    if capacity:
        title += f": a pool of {capacity} serves at most {capacity // count} requests at once"
    mechanism = [
        f"{top.multi_rounds} of {top.rounds} sampled rounds of {top.route} requests held "
        f"{count} connections or more at once (up to {top.max_connections})",
    ]
    if capacity:
        mechanism.append(
            f"a pool of {capacity} per worker serves {capacity // count} such requests at once; "
            f"a request holding its first connection while it waits for its second can "
            f"empty the pool by itself"
        )
    if len(candidates) > 1:
        others = ", ".join(c.route for c in candidates[1:4])
        mechanism.append(f"also: {others}")
    evidence: list[str] = [r for r in ("pool-saturation", "blocked-event-loop") if r in rules]
    where = [Where(h.file, h.line, h.function, h.role) for h in holders]
    return Cause(
        cause="two-connections-per-request",
        title=title,
        mechanism=mechanism,
        where=where,
        fix=(
            "Give a request one session: let the authentication dependency take the request's "
            "`get_db` session (FastAPI caches a dependency per request, so both get the same "
            "one) or end its own session before returning, and never open a second session "
            "while one is open."
        ),
        fix_link=FIX_LINK,
        evidence=evidence,
        severity="critical" if "pool-saturation" in rules and _harm(rules) else "warning",
    )


def _capacity(pools: list[PoolFigures]) -> int | None:
    """The per-worker pool capacity, when read or told and the same on every worker."""
    known = {p.capacity for p in pools if p.capacity is not None and p.source != "unknown"}
    return known.pop() if len(known) == 1 else None


def _sync_db(rules: dict[str, Finding], given: DiagnosisInput) -> Cause | None:
    """A sync session on the loop: the loop asleep in pool checkouts (the
    ``blocked-event-loop`` finding, critical), or idle in database calls for
    :data:`MIN_LOOP_DB_SHARE` of its samples."""
    loop = rules.get("blocked-event-loop")
    blocked = loop is not None and loop.severity == "critical"
    waits = loop_database_waits(given.wait_samples)
    worst = waits.worst
    waiting = worst is not None and worst[1] >= MIN_LOOP_DB_SHARE
    waiting = waiting and sum(waits.waiting.values()) >= MIN_LOOP_DB_SAMPLES
    if not blocked and not waiting:
        return None
    mechanism = [
        "an `async def` handler uses a sync session: its queries and pool checkouts run on "
        "the event loop, and while one waits no other request of the worker moves",
    ]
    where: list[Where] = []
    title = "sync database calls in `async def` handlers block the event loop"
    evidence: list[str] = []
    if waiting and worst is not None:
        pid, share = worst
        mechanism.append(
            f"the event loop waited on the database in {waits.waiting[pid]} of "
            f"{waits.loop_samples[pid]} loop samples of worker {pid} ({units.percent(share)})"
        )
        title += f" ({units.percent(share)} of loop samples waiting on a query)"
        top = min(waits.stacks.items(), key=lambda item: (-item[1], item[0]))[0]
        where = _path_where(describe(top))
    if blocked and loop is not None:
        rows = loop.evidence.get("workers") or [loop.evidence]
        share = max(float(r.get("blocked_share") or 0.0) for r in rows)
        mechanism.append(
            f"with the pool empty, the loop sleeps in the checkout up to {units.percent(share)} of "
            "the time, and no request of that worker moves, not even those that would give a "
            "connection back"
        )
        if not waiting:
            title += f" ({units.percent(share)} of loop samples waiting in a pool checkout)"
        paths = loop.evidence.get("code_paths") or []
        if paths and not where:
            first = str(paths[0]["path"]).split(" → ")
            app = [label for label in first if _is_app_label(label)]
            where = [_frame_where(app[0], "handler")] if app else []
            where.append(_frame_where(first[-1], "slow call"))
        evidence.append("blocked-event-loop")
    throughput = _throughput(given)
    if throughput:
        mechanism.append(throughput)
    if "pool-saturation" in rules:
        evidence.append("pool-saturation")
    return Cause(
        cause="sync-db-in-async",
        title=title,
        mechanism=mechanism,
        where=where,
        fix=(
            "Declare handlers that use a sync Session with `def` (FastAPI runs them in its "
            "thread pool), or use an async engine and `AsyncSession` with `await` on every "
            "query."
        ),
        fix_link=FIX_LINK,
        evidence=evidence,
        severity="critical",
    )


def _path_where(path: CodePath) -> list[Where]:
    """The handler (the path's outermost application frame) and its slow call."""
    found = [_frame_where(path.frames[0], "handler")] if path.frames else []
    slow = _slow_call(path)
    return [*found, slow] if slow is not None else found


def _frame_where(label: str, role: str) -> Where:
    name, file, line = split_label(label)
    return Where(file, int(line or 0), name, role)


def _slow_call(path: CodePath) -> Where | None:
    """The slow operation: the last application frame's call, at that frame's line."""
    if path.downstream is None or not path.frames:
        return None
    caller = split_label(path.frames[-1])
    callee = split_label(path.downstream)
    return Where(caller.file, int(caller.line or 0), f"{caller.name} → {callee.name}", "slow call")


def _calls(path: CodePath) -> str:
    """``call_tool → AsyncClient.post``: the path below the handler."""
    names = [split_label(label).name for label in path.frames[1:]]
    if path.downstream is not None:
        names.append(split_label(path.downstream).name)
    return " → ".join(names) or short_names(path)


def _is_app_label(label: str) -> bool:
    from profiler.analysis.code_paths import is_application_file

    return is_application_file(split_label(label).file)
