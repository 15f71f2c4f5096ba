"""The memory cause: a worker OOM-killed (or near its limit), and what its memory was.

The seed incident ended with workers killed by the OOM killer, each having
built large responses while it held database sessions: requests queued on the
pool, and every request in flight kept its half-built response in memory. The
findings say each part (``worker-vanished``: OOM-killed; ``memory-limit``,
``rss-growth``: the RSS timeline); this cause joins them with the two things
that name the code:

* memray's bytes live at the worker's peak, per Python stack
  (:class:`WorkerPeak`, written at capture time by
  :mod:`profiler.session.memory_peaks`): each stack is put under the endpoint
  whose handler it runs (the task sampler's ``endpoint`` labels name the
  handler: ``GET /servers (list_servers)``), and within the endpoint under its
  allocation sites, the innermost application frame of each stack;
* the task samples: whether that endpoint's requests held connections while
  they ran (:func:`profiler.analysis.requests.connections_per_request`), and
  who opened them.

``oom-kill`` when a worker was OOM-killed, ``memory-growth`` when one came near
its memory limit (a critical ``memory-limit`` or ``rss-growth``) without being
killed. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from profiler import units
from profiler.analysis.code_paths import ENDPOINT_PREFIX, is_application_file
from profiler.analysis.collapsed import split_label
from profiler.analysis.columns import epoch_seconds
from profiler.analysis.requests import EndpointConnections

if TYPE_CHECKING:
    import pandas as pd

    from profiler.analysis.diagnosis import Cause, Where
    from profiler.analysis.findings import Finding

FIX_LINK = "how-to/bound-response-memory.md"
_ANON_RSS = re.compile(r"anon-rss:(\d+)kB")
TOP_SITES = 2  # allocation sites named in ``where``
MIN_SITE_SHARE = 0.05  # of the endpoint's bytes: a smaller site is not named
FIX = (
    "Build the response after the session is closed: read the rows into plain values in "
    "a short `with Session() as db:` block, end it, then fetch and assemble. And bound "
    "what one response holds: stream it (a generator over pages, each page read in its "
    "own short session) or paginate it (a `limit` the client pages through), so memory "
    "per request stays flat whatever the catalogue's size."
)


@dataclass(frozen=True, slots=True)
class WorkerPeak:
    """memray at one worker's high-water mark: ``stacks`` are (collapsed stack, bytes), the
    heaviest first, outermost frame first; ``tracked_bytes`` their sum over every stack;
    ``closed``: False when memray never closed the capture (the worker was killed)."""

    pid: int
    peak_bytes: int
    tracked_bytes: int
    closed: bool
    stacks: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class MemoryShare:
    """What a worker's peak was made of: bytes per endpoint, and per allocation site of the
    heaviest endpoint (``sites``: (label, bytes), heaviest first)."""

    total: int
    by_endpoint: dict[str, int]
    endpoint: str | None
    sites: list[tuple[str, int]]

    @property
    def endpoint_bytes(self) -> int:
        return self.by_endpoint.get(self.endpoint, 0) if self.endpoint else 0


def memory_cause(
    findings: list[Finding],
    peaks: list[WorkerPeak],
    tasks: pd.DataFrame,
    requests: list[EndpointConnections],
    rss: pd.DataFrame | None,
) -> Cause | None:
    """The memory cause (see the module docstring), or None when no worker was OOM-killed
    or came near its memory limit."""
    from profiler.analysis.diagnosis import Cause

    killed = [f for f in findings if f.rule == "worker-vanished" and _oom(f)]
    near = [
        f for f in findings if f.rule in ("memory-limit", "rss-growth") and f.severity == "critical"
    ]
    if not killed and not near:
        return None
    symptom = killed[0] if killed else near[0]
    pid = int(symptom.evidence["worker_pid"])
    peak = _peak_of(pid, peaks)
    endpoints = _endpoints(tasks)
    share = memory_share(peak, endpoints) if peak is not None else None
    endpoint = share.endpoint if share is not None else None
    held = _held(endpoint, requests, tasks)
    mechanism = [_first_line(symptom, pid, killed)]
    growth = _rss_line(rss, pid)
    if growth:
        mechanism.append(growth)
    if share is not None and peak is not None and share.total:
        mechanism.append(_memray_line(peak, share))
    if held is not None:
        mechanism.append(held.line)
    evidence = [
        rule
        for rule in ("worker-vanished", "memory-limit", "rss-growth", "pool-saturation")
        if any(f.rule == rule for f in findings)
    ]
    return Cause(
        cause="oom-kill" if killed else "memory-growth",
        title=_title(symptom, pid, killed, share, held),
        mechanism=mechanism,
        where=_where(share, held),
        fix=FIX,
        fix_link=FIX_LINK,
        evidence=evidence,
        severity="critical",
    )


def memory_share(peak: WorkerPeak, endpoints: dict[str, str]) -> MemoryShare:
    """Bytes at ``peak`` per endpoint (``endpoints``: handler name -> endpoint label; a stack
    with none of them is put under its outermost application frame, else ``other``), and
    the allocation sites of the heaviest endpoint.

    >>> peak = WorkerPeak(1, 100, 100, False, (
    ...     ("run (uvicorn/server.py:1);list_servers (app.py:9);build (app.py:20)", 70),
    ...     ("run (uvicorn/server.py:1);import_module (importlib/__init__.py:3)", 30)))
    >>> share = memory_share(peak, {"list_servers": "GET /servers (list_servers)"})
    >>> share.endpoint, share.endpoint_bytes, share.sites
    ('GET /servers (list_servers)', 70, [('build (app.py:20)', 70)])
    """
    by_endpoint: Counter[str] = Counter()
    sites: dict[str, Counter[str]] = {}
    for stack, size in peak.stacks:
        labels = [label for label in stack.split(";") if label]
        app = [label for label in labels if is_application_file(split_label(label).file)]
        endpoint = next(
            (endpoints[n] for n in (split_label(label).name for label in labels) if n in endpoints),
            None,
        )
        if endpoint is None:
            endpoint = split_label(app[0]).name if app else "other"
        by_endpoint[endpoint] += size
        site = app[-1] if app else (labels[-1] if labels else "?")
        sites.setdefault(endpoint, Counter())[site] += size
    ranked = sorted(by_endpoint.items(), key=lambda item: (-item[1], item[0]))
    top = next((name for name, _ in ranked if name != "other"), None)
    mine = sites.get(top, Counter()) if top is not None else Counter()
    top_sites = sorted(mine.items(), key=lambda item: (-item[1], item[0]))
    total = max(peak.tracked_bytes, sum(by_endpoint.values()))
    return MemoryShare(total, dict(by_endpoint), top, top_sites)


@dataclass(frozen=True, slots=True)
class _Held:
    line: str
    holders: list[Where]


def _held(
    endpoint: str | None, requests: list[EndpointConnections], tasks: pd.DataFrame
) -> _Held | None:
    """Whether ``endpoint``'s requests held connections, in how many of their rounds."""
    from profiler.analysis.diagnosis import Where

    if endpoint is None:
        return None
    found = next((r for r in requests if _shown(r.endpoint) == _shown(endpoint)), None)
    if found is None or not found.rounds:
        return None
    seen = _rounds_of(endpoint, tasks)
    route = _route(endpoint)
    holders = [
        Where(h.file, h.line, h.function, h.role) for h in found.all_holders if h.role != "handler"
    ]
    holders = list(dict.fromkeys(holders))
    names = dict.fromkeys(f"{h.role} `{h.function}`" for h in holders)
    named = ", ".join(list(names)[:2])
    line = f"{route} requests held a database connection in {found.rounds}"
    line += f" of {seen} sampled request rounds" if seen >= found.rounds else " sampled rounds"
    if seen:
        line += f" ({units.percent(min(1.0, found.rounds / seen))})"
    if named:
        line += f", opened by {named}"
    line += (
        ": each response was built while its session was open, so requests queued on the "
        "pool and every one in flight kept its response in memory"
    )
    return _Held(line, holders)


def _rounds_of(endpoint: str, tasks: pd.DataFrame) -> int:
    """Request rounds of ``endpoint`` sampled (holding or not)."""
    if tasks.empty or "endpoint" not in tasks.columns:
        return 0
    labels = tasks["endpoint"].astype(str).str.removeprefix(ENDPOINT_PREFIX)
    mine = tasks[(labels == _shown(endpoint)).to_numpy(dtype=bool)]
    if mine.empty:
        return 0
    key = "request" if "request" in mine.columns else "task_id"
    return len(mine[["worker_pid", "taken_at", key]].drop_duplicates())


def _endpoints(tasks: pd.DataFrame) -> dict[str, str]:
    """Handler name -> its endpoint label as the task samples' ``endpoint`` column has it
    (``endpoint GET /servers (list_servers)``: :func:`_shown` drops the prefix)."""
    if tasks.empty or "endpoint" not in tasks.columns:
        return {}
    found: dict[str, str] = {}
    for raw in sorted({str(e) for e in tasks["endpoint"].dropna().unique().tolist()}):
        if raw.endswith(")") and " (" in raw:
            found.setdefault(raw.rsplit(" (", 1)[1][:-1], raw)
    return found


def _shown(endpoint: str) -> str:
    """``GET /servers (list_servers)``, without the task sampler's ``endpoint`` prefix."""
    return endpoint.removeprefix(ENDPOINT_PREFIX)


def _route(endpoint: str) -> str:
    """``GET /servers``."""
    shown = _shown(endpoint)
    return shown.rsplit(" (", 1)[0] if shown.endswith(")") and " (" in shown else shown


def _peak_of(pid: int, peaks: list[WorkerPeak]) -> WorkerPeak | None:
    """The worker's own peak; else (memray not on it) none: another worker's memory is
    not this worker's story."""
    return next((p for p in peaks if p.pid == pid), None)


def _oom(finding: Finding) -> bool:
    return finding.evidence.get("exit") == "oom-killed"


def _first_line(symptom: Finding, pid: int, killed: list[Finding]) -> str:
    found = symptom.evidence
    limit = found.get("memory_limit_bytes")
    if killed:
        line = f"worker {pid} was killed by the OOM killer"
        if found.get("seconds_into_session") is not None:
            line += f" {units.seconds(float(found['seconds_into_session']))} into the session"
        if limit:
            line += f", its cgroup at its {units.size(int(limit))} memory limit"
        if found.get("last_rss_bytes"):
            line += f" (last RSS seen {units.size(int(found['last_rss_bytes']))})"
        witness = _witness(str(found.get("oom_evidence") or ""))
        if witness:
            line += f"; {witness}"
        if len(killed) > 1:
            line += f"; {len(killed) - 1} more OOM-killed"
        return line
    return symptom.title


def _witness(evidence: str) -> str | None:
    """What says it was the OOM killer, short: the kernel's line (with the anonymous memory it
    freed), else the cgroup's counter."""
    if "kernel:" in evidence:
        freed = _ANON_RSS.search(evidence)
        text = "the kernel log names it"
        return text + (f" (anon-rss {units.size(int(freed.group(1)) * 1024)})" if freed else "")
    if "oom_kill" in evidence:
        return "its cgroup's oom_kill counter rose"
    return None


def _rss_line(rss: pd.DataFrame | None, pid: int) -> str | None:
    """``RSS 84 MiB → 310 MiB over 4.1 s (+55 MiB/s)`` from the worker's RSS samples."""
    if rss is None or rss.empty:
        return None
    mine = rss[(rss["worker_pid"] == pid).to_numpy(dtype=bool)]
    if len(mine) < 2:
        return None
    taken = epoch_seconds(mine["taken_at"])
    values = mine["rss_bytes"].to_numpy(dtype=np.float64)
    order = np.argsort(taken, kind="stable")
    taken, values = taken[order], values[order]
    alive = values > 0  # a sample taken as the worker died reads 0
    taken, values = taken[alive], values[alive]
    if values.size < 2:
        return None
    low = int(np.argmin(values))
    high = low + int(np.argmax(values[low:]))
    span = float(taken[high] - taken[low])
    if span <= 0 or values[high] <= values[low]:
        return None
    rate = (values[high] - values[low]) / span
    return (
        f"RSS {units.size(float(values[low]))} → {units.size(float(values[high]))} over "
        f"{units.seconds(span)} (+{units.size(rate)}/s)"
    )


def _memray_line(peak: WorkerPeak, share: MemoryShare) -> str:
    endpoint = _shown(share.endpoint) if share.endpoint else "other"
    line = (
        f"memray: {units.percent(share.endpoint_bytes / share.total)} of the "
        f"{units.size(share.total)} live at the worker's peak"
    )
    line += " (its capture read up to the kill)" if not peak.closed else ""
    line += f" was allocated under {endpoint}"
    named = _named_sites(share)
    if named:
        parts = [f"{label} {units.percent(size / share.total)}" for label, size in named]
        line += ": " + ", ".join(parts)
    return line


def _named_sites(share: MemoryShare) -> list[tuple[str, int]]:
    floor = MIN_SITE_SHARE * max(share.endpoint_bytes, 1)
    return [(label, size) for label, size in share.sites[:TOP_SITES] if size >= floor]


def _title(
    symptom: Finding,
    pid: int,
    killed: list[Finding],
    share: MemoryShare | None,
    held: _Held | None,
) -> str:
    limit = symptom.evidence.get("memory_limit_bytes")
    at = f" at its {units.size(int(limit))} limit" if limit else ""
    if killed:
        title = f"worker {pid} killed by the OOM killer{at}"
    else:
        title = f"worker {pid} near its memory limit{at}"
    if share is not None and share.endpoint is not None and share.total:
        route = _route(share.endpoint)
        title += (
            f": {units.percent(share.endpoint_bytes / share.total)} of the growth allocated under "
            f"{route}"
        )
        if held is not None:
            title += " while it held sessions"
    return title


def _where(share: MemoryShare | None, held: _Held | None) -> list[Where]:
    """The allocation sites (``allocation``), then who opened the sessions."""
    from profiler.analysis.diagnosis import Where

    where: list[Where] = []
    for label, _ in _named_sites(share) if share is not None else []:
        name, file, line = split_label(label)
        where.append(Where(file, int(line or 0), name, "allocation"))
    if held is not None:
        where += [h for h in held.holders if h not in where]
    return where
