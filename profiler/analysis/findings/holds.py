"""Rules about transactions held open: the code paths, idle in transaction, stuck queries."""

from __future__ import annotations

from collections import Counter
from typing import Any

from profiler import units
from profiler.analysis.code_paths import CodePath, short_names
from profiler.analysis.findings.common import (
    _by_code_path,
    _episode_rows,
    _EpisodeRow,
    _finding,
    _idle_beyond,
    _plural,
    _round,
    _short_query,
    _unknown_owner,
    _workers,
)
from profiler.analysis.findings.records import (
    LISTED,
    STUCK_QUERIES_LISTED,
    Evidence,
    Finding,
    Thresholds,
)
from profiler.analysis.stats import percentile


def held_code_path(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """The code paths that held connections longest, from the hold profile.

    Only when some transaction sat idle in transaction beyond the threshold:
    in a healthy session transactions last milliseconds and where they were
    held is not news. Each path says how it was attributed (``task``,
    ``worker-fallback``, ``threads``). The worker fallback (no task was seen
    holding the connection) is what the worker did meanwhile, not the holder:
    its paths are listed, labelled, but shares, endpoints and the severity
    are taken over the attributed time only (all of it when there is nothing
    else, and then never critical). Critical when the top path or endpoint
    holds half of that time.
    """
    if _idle_beyond(evidence.episodes, thresholds.idle_in_transaction_seconds).empty:
        return []
    paths, ranked, display_of = _by_code_path(evidence.hold_profile)
    millis = Counter(dict(ranked))
    owners: dict[str, set[int]] = {display: set() for display in millis}
    kinds: dict[str, str | None] = {}
    attributed: Counter[str] = Counter()
    for stack, display in display_of.items():
        owners[display].update(int(pid) for pid in evidence.hold_owners.get(stack, ()))
        kind = "worker-fallback" if paths[display].fallback else evidence.hold_kinds.get(stack)
        kinds.setdefault(display, kind)
        attributed[kind or "unknown"] += evidence.hold_profile[stack]
    total_ms = sum(millis.values())
    if total_ms <= 0:
        return []
    fallback_ms = attributed.get("worker-fallback", 0)
    base_ms = total_ms - fallback_ms or total_ms  # what shares are of
    only_fallback = fallback_ms >= total_ms
    kept = [
        (display, ms) for display, ms in ranked if only_fallback or not paths[display].fallback
    ][: max(thresholds.top_paths, 1)]
    listed = [
        {
            "path": display,
            "frames": list(paths[display].frames),
            "downstream": paths[display].downstream,
            "seconds_held": round(ms / 1000, 3),
            "share": round(ms / base_ms, 4),
            "owner_pids": sorted(owners[display]),
            "attribution": kinds.get(display),
        }
        for display, ms in kept
    ]
    endpoints = _by_endpoint(paths, millis, owners, base_ms)
    top_display, top_ms = kept[0]
    share = top_ms / base_ms
    of = f"of {units.seconds(base_ms / 1000)}" + (
        f" attributed ({units.seconds(fallback_ms / 1000)} more by the worker fallback)"
        if fallback_ms and not only_fallback
        else ""
    )
    top_owners = sorted(owners[top_display])
    title = f"{short_names(paths[top_display])} held connections {units.percent(share)} {of}"
    if top_owners:
        title += f" ({_workers(top_owners)})"
    if endpoints and endpoints[0]["share"] >= share:
        top = endpoints[0]
        share, top_ms = top["share"], top["seconds_held"] * 1000
        title = (
            f"{top['endpoint']} held connections {units.percent(share)} {of}"
            + (f" ({_workers(top['owner_pids'])})" if top["owner_pids"] else "")
            + ": "
            + "; ".join(f"{units.percent(p['share'])} {p['names']}" for p in top["paths"][:3])
        )
    elif kinds.get(top_display) == "threads":  # worker-level, as the fallback is: say so
        title += "; from py-spy thread dumps (no task sampler): the worker's threads meanwhile"
    return [
        _finding(
            "held-code-path",
            "critical" if share >= 0.5 and not only_fallback else "warning",
            title,
            {
                "paths": listed,
                "paths_total": len(ranked),
                "share_of": "all" if only_fallback else "attributed",
                "endpoints": endpoints,
                "total_seconds_held": round(total_ms / 1000, 3),
                "attributed_seconds": {
                    kind: round(ms / 1000, 3) for kind, ms in sorted(attributed.items())
                },
                "idle_in_transaction_seconds": thresholds.idle_in_transaction_seconds,
            },
            top_ms / 1000,
        )
    ]


def _by_endpoint(
    paths: dict[str, CodePath], millis: Counter[str], owners: dict[str, set[int]], total_ms: float
) -> list[dict[str, Any]]:
    """Held time per request endpoint (task samples name it), each with its paths.

    A request holds its connections from its first query to its end: while
    it resolves dependencies, awaits a downstream call, serialises. Its
    endpoint is what a reader can change, whatever frame it was in.
    """
    grouped: dict[str, list[tuple[str, int]]] = {}
    for display, ms in millis.items():
        endpoint = paths[display].endpoint
        if endpoint is not None and not paths[display].fallback:
            grouped.setdefault(endpoint, []).append((display, ms))
    rows: list[dict[str, Any]] = []
    for endpoint, members in grouped.items():
        held_ms = sum(ms for _, ms in members)
        members.sort(key=lambda item: (-item[1], item[0]))
        rows.append(
            {
                "endpoint": endpoint,
                "seconds_held": round(held_ms / 1000, 3),
                "share": round(held_ms / total_ms, 4),
                "owner_pids": sorted({pid for display, _ in members for pid in owners[display]}),
                "paths": [
                    {
                        "path": display,
                        "names": _names_without_endpoint(paths[display]),
                        "share": round(ms / held_ms, 4),
                    }
                    for display, ms in members[:5]
                ],
            }
        )
    rows.sort(key=lambda row: (-row["seconds_held"], row["endpoint"]))
    return rows


def _names_without_endpoint(path: CodePath) -> str:
    return short_names(path._replace(endpoint=None))


def idle_in_transaction(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Transactions that sat idle in transaction longer than the threshold, in one finding.

    Critical when the longest period is ten times the threshold or there are
    ten such transactions or more.
    """
    limit = thresholds.idle_in_transaction_seconds
    idle = _idle_beyond(evidence.episodes, limit)
    if idle.empty:
        return []
    rows = _episode_rows(idle)
    ages = sorted(row.max_idle_age for row in rows)
    count = len(ages)
    longest = ages[-1]
    p50, p95 = percentile(ages, 50), percentile(ages, 95)
    known = [row for row in rows if row.owner_pid is not None]
    unknown = count - len(known)
    still_open = sum(row.open for row in rows)

    by_owner: dict[int, list[_EpisodeRow]] = {}
    for row in known:
        by_owner.setdefault(row.owner_pid or 0, []).append(row)
    owner_order = sorted(
        by_owner.items(),
        key=lambda item: (-len(item[1]), -max(r.max_idle_age for r in item[1]), item[0]),
    )
    owners = [
        {
            "owner_pid": pid,
            "owner_cmdline": next(
                (r.owner_cmdline for r in reversed(group) if r.owner_cmdline), None
            ),
            "episodes": len(group),
            "max_idle_age": round(max(r.max_idle_age for r in group), 3),
            "idle_seconds": round(sum(r.idle_seconds for r in group), 3),
            "open": sum(r.open for r in group),
        }
        for pid, group in owner_order
    ]
    by_query: dict[str | None, list[_EpisodeRow]] = {}
    for row in rows:
        by_query.setdefault(row.query, []).append(row)
    query_order = sorted(
        by_query.items(),
        key=lambda item: (-len(item[1]), -max(r.max_idle_age for r in item[1]), item[0] or ""),
    )
    queries = [
        {
            "query": query,
            "episodes": len(group),
            "max_idle_age": round(max(r.max_idle_age for r in group), 3),
        }
        for query, group in query_order
    ]

    title = (
        f"{_plural(count, 'transaction', 'transactions')} idle in transaction over "
        f"{units.seconds(limit)} (p95 {units.seconds(p95 or 0.0)}, max {units.seconds(longest)})"
    )
    if known:
        title += f" on {_plural(len(by_owner), 'worker', 'workers')}"
    if unknown:
        title += (
            f", {unknown} with {_unknown_owner(rows)}" if known else f", {_unknown_owner(rows)}"
        )
    if still_open:
        title += f"; {still_open} still open"
    critical = longest >= 10 * limit or count >= 10
    return [
        _finding(
            "idle-in-transaction",
            "critical" if critical else "warning",
            title,
            {
                "threshold_seconds": limit,
                "episodes": count,
                "p50_idle_age": _round(p50),
                "p95_idle_age": _round(p95),
                "max_idle_age": round(longest, 3),
                "total_idle_seconds": round(sum(row.idle_seconds for row in rows), 3),
                "still_open": still_open,
                "owner_unknown": unknown,
                "by_owner": owners[:LISTED],
                "owners_total": len(owners),
                "by_query": queries[:LISTED],
                "queries_total": len(queries),
            },
            sum(row.idle_seconds for row in rows),
        )
    ]


def stuck_query(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """One finding per query text (normalised) left idle in transaction for
    ``stuck_query_seconds`` or more, across all its transactions; the
    :data:`STUCK_QUERIES_LISTED` that held longest in total (the
    idle-in-transaction finding counts them all)."""
    limit = thresholds.stuck_query_seconds
    stuck = _idle_beyond(evidence.episodes, limit, inclusive=True)
    if stuck.empty:
        return []
    by_query: dict[str | None, list[_EpisodeRow]] = {}
    for row in _episode_rows(stuck):
        by_query.setdefault(row.query, []).append(row)
    found = []
    for query, group in by_query.items():
        ages = [row.max_idle_age for row in group]
        owners = sorted({row.owner_pid for row in group if row.owner_pid is not None})
        unknown = sum(row.owner_pid is None for row in group)
        low, high = min(ages), max(ages)
        span = (
            units.seconds(high)
            if round(low) == round(high)
            else f"{units.number(low)}\N{EN DASH}{units.seconds(high)}"
        )
        title = (
            f"{_short_query(query)} held idle in transaction {span} in "
            f"{_plural(len(group), 'transaction', 'transactions')}"
        )
        if owners:
            title += f" ({_workers(owners)})"
        elif unknown:
            title += f" ({_unknown_owner(group)})"
        found.append(
            _finding(
                "stuck-query",
                "warning",
                title,
                {
                    "query": query,
                    "threshold_seconds": limit,
                    "episodes": len(group),
                    "min_idle_age": round(low, 3),
                    "max_idle_age": round(high, 3),
                    "idle_seconds": round(sum(row.idle_seconds for row in group), 3),
                    "still_open": sum(row.open for row in group),
                    "owner_pids": owners,
                    "owner_unknown": unknown,
                },
                sum(row.idle_seconds for row in group),
            )
        )
    found.sort(key=lambda finding: (-finding.score, finding.title))
    return found[:STUCK_QUERIES_LISTED]  # an hour of a busy gateway has hundreds
