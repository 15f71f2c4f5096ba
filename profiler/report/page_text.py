"""Words as the findings page writes them: headings, cuts, evidence numbers by their key.

Quantities (bytes, seconds, shares) come from :mod:`profiler.units`, so the same value prints
the same on every section of the page and on every other page.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler import units

if TYPE_CHECKING:
    from profiler.session.reader import Session

QUERY_CHARS = 2000  # a last query longer than this is cut on the page
CMDLINE_CHARS = 160

ATTRIBUTION = {
    "tasks": "the asyncio task sampler's samples (`tasks`)",
    "threads": "py-spy thread dumps (`threads`)",
    "tasks+threads": "asyncio task samples, and py-spy thread dumps for workers without "
    "the task sampler (`tasks+threads`)",
    "none": "nothing: no stack sample fell inside a held transaction (`none`)",
}
ATTRIBUTION_KINDS = {
    "task": "to the task that held the connection (the task ↔ backend join)",
    "worker-fallback": "by the worker fallback: no task was seen holding the connection, so "
    "its time is shared among the worker's requests meanwhile; those paths are marked "
    "*(worker fallback)* and name what ran, not the holder",
    "threads": "from the worker's py-spy thread dumps (no task sampler in that worker)",
}
SEVERITY_ORDER = ("critical", "warning", "info")
RULE_HEADINGS = {
    "held-code-path": "Code that held connections",
    "idle-in-transaction": "Idle in transaction",
    "pool-saturation": "Pool saturated",
    "blocked-event-loop": "Event loop blocked on the pool",
    "stuck-query": "Query stuck in a transaction",
    "rss-growth": "Memory growing",
    "memory-limit": "Near the memory limit",
    "worker-vanished": "Worker vanished",
}  # short headings: the page's table of contents stays readable
SKIPPED_EVIDENCE = frozenset({"frames", "time", "peak_at"})
"""Evidence keys the page leaves to the JSON: repeated by another column, or raw epochs."""


def fenced(text: str, language: str) -> list[str]:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", *text.rstrip("\n").splitlines(), fence]


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def header(key: str) -> str:
    return key.replace("_", " ")


def singular(key: str) -> str:
    return key[:-1] if key.endswith("s") else key


def is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def number_for(key: str, value: float) -> str:
    """A number as its key says: bytes, shares, seconds, or plain."""
    if key.endswith("bytes") or key.endswith("bytes_per_minute"):
        text = units.size(value)
        return f"{text}/min" if key.endswith("per_minute") else text
    if "share" in key:
        return units.percent(value)
    if "seconds" in key or key.endswith("_age") or key.endswith("age"):
        return f"{plain_number(value)} s"  # the evidence's own digits, as the JSON has them
    if "pid" in key:  # an identifier, not a quantity: no thousands separator
        return str(int(value))
    return plain_number(value)


def plain_number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def held_seconds(seconds: float) -> str:
    """``12.3 s``, and two decimals under a tenth (a healthy session's holds are short)."""
    return units.seconds(seconds, 2 if seconds < 0.1 else 1)


def measure_text(value: Any, unit: str) -> str:
    return "-" if missing(value) else units.measure(value, unit)


def utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def missing(value: Any) -> bool:
    import pandas as pd

    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def session_path(session: Session, path: Path) -> str:
    try:
        return path.relative_to(session.path).as_posix()
    except ValueError:
        return path.name


MEASURE_POPULATIONS = {
    "idle_in_transaction": "transactions idle in transaction longer than the threshold",
    "idle_in_transaction_peak": "connections idle in transaction at one snapshot, the most",
    "idle_age_p50": "the longest idle-in-transaction age of each transaction, median",
    "idle_age_p95": "the longest idle-in-transaction age of each transaction, p95",
    "idle_age_max": "the longest idle-in-transaction age of any transaction",
    "held_per_worker_mean": "connections a worker held in a transaction, mean over snapshots",
    "held_per_worker_max": "connections a worker held in a transaction, most at a snapshot",
    "connection_seconds_held": "seconds each connection was held, summed over connections",
    "throughput_rps": "successful requests per second of the recorded load",
    "load_errors": "requests of the recorded load that failed (status >= 400, timeout, refused)",
    "peak_rss_bytes": "resident memory of the largest worker, at its peak",
    "vanished_workers": "workers gone before the session ended",
}
"""What each measure counts, and over what: two p50s of different populations must not
read alike."""
