"""The page's held transactions: grouped by query and holder, the single ones collapsed.

Twenty transactions of one incident are the same query held by the same code twenty times;
one row per (last query, holder) says it once, with how many, how long in total and at
most. Each transaction's own row is still there, in a collapsed block, for whoever wants
the backend PID to look up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from profiler import units
from profiler.report import markdown as md
from profiler.report.episode_stacks import attributed_stacks, stacks_during
from profiler.report.page_text import ATTRIBUTION, cut, fenced, missing, plural

if TYPE_CHECKING:
    from profiler.report.scrub import Scrub
    from profiler.session.summary import Summary

EPISODES_SHOWN = 20
GROUPS_SHOWN = 5
_LOCATION = re.compile(r" \([^()]*:\d+\)")
_QUERY = re.compile(
    r"^\s*(?P<verb>\w+)\b.*?\b(?P<into>from|into|update)\s+(?P<table>[\w.\"]+)", re.I | re.S
)


def gist(query: str) -> str:
    """A query's verb and table: ``SELECT … FROM tools`` (the full text is below the table).

    >>> gist("SELECT a.id, a.name FROM app.tools WHERE id = $1")
    'SELECT … FROM app.tools …'
    >>> gist("BEGIN")
    'BEGIN'
    """
    found = _QUERY.match(query)
    if found is None:
        return cut(query, 60)
    return f"{found['verb'].upper()} … {found['into'].upper()} {found['table']} …"


def short(path: str) -> str:
    """A code path without its file:line parts, names only (the table cell fits a line)."""
    return _LOCATION.sub("", path)


@dataclass
class _Group:
    query: str
    holder: str
    durations: list[float] = field(default_factory=list)
    idle: float = 0.0
    workers: set[int] = field(default_factory=set)


def held_section(summary: Summary, scrub: Scrub) -> list[str]:
    episodes = summary.episodes
    lines = ["## Held transactions", ""]
    if episodes.empty:
        return [*lines, "No transaction was seen in `pg_stat_activity`.", ""]
    longest = episodes.sort_values(
        ["duration", "episode_id"], ascending=[False, True], kind="stable"
    ).head(EPISODES_SHOWN)
    attributed = summary.attributed
    from_tasks = attributed_stacks(attributed, longest) if attributed is not None else {}
    threads = stacks_during(summary.session, longest)
    rows = longest.to_dict("records")
    holders = {int(row["episode_id"]): _holder(row, from_tasks, threads, summary) for row in rows}
    groups: dict[tuple[str, str], _Group] = {}
    for row in rows:
        query = row.get("last_query")
        text = "" if missing(query) or not query else " ".join(scrub.query(str(query)).split())
        holder = short(scrub.text(holders[int(row["episode_id"])]))
        group = groups.setdefault((text, holder), _Group(text, holder))
        group.durations.append(float(row["duration"]))
        group.idle += float(row["idle_seconds"])
        if not missing(row["owner_pid"]):
            group.workers.add(int(row["owner_pid"]))
    ranked = sorted(groups.values(), key=lambda g: (-sum(g.durations), g.query, g.holder))
    source = ATTRIBUTION.get(summary.attribution, summary.attribution)
    lines += [
        f"The {len(rows)} longest of {plural(len(episodes), 'transaction', 'transactions')} "
        f"seen, grouped by their last query and the code that held them (from {source}). "
        "*Held*: seconds each transaction was seen open; *idle*: seconds of that spent idle "
        "in transaction, waiting for the application.",
        "",
        "| transactions | held, total | held, longest | idle, total | workers | held by | "
        "last query |",
        "|---:|---:|---:|---:|---|---|---|",
    ]
    for group in ranked[:GROUPS_SHOWN]:
        workers = ", ".join(str(pid) for pid in sorted(group.workers)) or "-"
        lines.append(
            f"| {len(group.durations)} | {units.seconds(sum(group.durations), 1)} "
            f"| {units.seconds(max(group.durations), 1)} | {units.seconds(group.idle, 1)} "
            f"| {workers} "
            f"| {md.code(group.holder) if group.holder else '-'} "
            f"| {md.code(gist(group.query)) if group.query else 'not seen'} |"
        )
    lines.append("")
    if len(ranked) > GROUPS_SHOWN:
        lines += [f"{len(ranked) - GROUPS_SHOWN} smaller groups not shown.", ""]
    lines += _each(rows, holders, summary, scrub)
    return lines


def _holder(
    row: dict[str, Any],
    from_tasks: dict[int, list[tuple[str, float, float]]],
    threads: dict[int, list[tuple[str, int, float]]],
    summary: Summary,
) -> str:
    """The heaviest code path of whatever held the transaction; fallbacks say so."""
    episode = int(row["episode_id"])
    attributed = summary.attributed
    kind = attributed.kinds.get(episode) if attributed is not None else None
    if from_tasks.get(episode):
        path = from_tasks[episode][0][0]
        return path if kind == "task" or "fallback" in path else f"(worker fallback) {path}"
    if threads.get(episode):
        return f"{threads[episode][0][0]} (thread dumps)"
    return ""


def _owner(row: dict[str, Any]) -> str:
    """The worker (``1234 via pgbouncer`` behind a pooler), or the pooler's own label when
    no worker is known: a pooler is never shown as a worker."""
    via, label = row.get("owner_via"), row.get("owner_label")
    if not missing(row["owner_pid"]):
        return str(int(row["owner_pid"])) + ("" if missing(via) or not via else f" via {via}")
    return "-" if missing(label) or not label else str(label)


def _each(
    rows: list[dict[str, Any]], holders: dict[int, str], summary: Summary, scrub: Scrub
) -> list[str]:
    """Every listed transaction, one row each, collapsed; then the full text of each query."""
    start = summary.session.start
    lines = [
        '<details markdown="1">',
        f"<summary>Each of the {len(rows)} transactions (backend, worker, times)</summary>",
        "",
        "| backend | worker | started | held | idle | longest idle | snapshots | held by |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    queries: list[str] = []
    for row in rows:
        owner = _owner(row)
        held = units.seconds(row["duration"], 1) + (" (still open)" if row["open"] else "")
        longest_idle = (
            "-" if missing(row["max_idle_age"]) else units.seconds(row["max_idle_age"], 1)
        )
        holder = short(scrub.text(holders[int(row["episode_id"])]))
        lines.append(
            f"| {int(row['pid'])} | {owner} | {units.offset(row['start'] - start, unit=' s')} "
            f"| {held} | {units.seconds(row['idle_seconds'], 1)} | {longest_idle} "
            f"| {int(row['samples'])} "
            f"| {md.code(holder) if holder else '-'} |"
        )
        query = row.get("last_query")
        if not missing(query) and query:
            text = scrub.query(str(query)).strip()
            if text not in queries:
                queries.append(text)
    lines.append("")
    for number, text in enumerate(queries, 1):
        lines += [f"Last query {number}:", "", *fenced(cut(text, 2000), "sql"), ""]
    lines += ["</details>", ""]
    return lines
