"""The records every rule shares: a finding, the thresholds, the evidence it reads."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from profiler.units import MIB

if TYPE_CHECKING:
    import pandas as pd

SEVERITIES = ("critical", "warning", "info")
RULES = (
    "worker-vanished",
    "held-code-path",
    "idle-in-transaction",
    "pool-saturation",
    "blocked-event-loop",
    "memory-limit",
    "stuck-query",
    "rss-growth",
)
"""Every rule id, in the order ties within a severity are broken."""

QUERY_CHARS = 200  # a normalised query text is cut to this many characters
TITLE_QUERY_CHARS = 60
LISTED = 20  # entries kept in by-owner / by-query lists (the rest are counted)


STUCK_QUERIES_LISTED = 10


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing worth a reader's attention: what, how bad, and the numbers behind it.

    ``score`` ranks findings of one rule and severity (connection-seconds
    involved, bytes per minute, ...); it is not comparable across rules.
    """

    rule: str
    severity: str
    title: str
    evidence: dict[str, Any]
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "title": self.title,
            "evidence": copy.deepcopy(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    idle_in_transaction_seconds: float = 1.0  # an idle-in-tx period longer than this is a finding
    stuck_query_seconds: float = 10.0
    top_paths: int = 5
    saturation_share: float = 0.2  # share of snapshots a worker sat at its cap
    rss_growth_bytes_per_minute: float = 10 * MIB
    rss_growth_min_seconds: float = 30.0  # need this much RSS history to talk about a rate
    memory_limit_share: float = 0.8
    blocked_loop_samples: int = 2  # fewer loop samples asleep in a checkout are no finding
    blocked_loop_share: float = 0.05  # critical from this share of the loop's samples


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True, eq=False)
class Evidence:
    """Everything the rules look at, already computed by the caller.

    ``episodes``: :func:`~profiler.analysis.episodes.held_episodes`;
    ``held``: :func:`~profiler.analysis.held_counts.connections_held`;
    ``hold_profile``: :func:`~profiler.analysis.hold_stacks.hold_profile`, in ms
    (typically over the episodes idle in transaction beyond the threshold);
    ``hold_owners``: for each stack of ``hold_profile``, the owner pids of the
    episodes its samples came from (optional); ``hold_kinds``: for each stack,
    how it was attributed (``task``, ``worker-fallback``, ``threads``;
    optional); ``wait_samples``: stack
    samples (``worker_pid``, ``taken_at``, ``stack``, ``active``); ``rss``:
    ``taken_at``, ``worker_pid``, ``rss_bytes``; ``workers``: worker events
    (``time``, ``pid``, ``event`` ``appeared``/``vanished``, and for
    vanished ones ``exit``, ``oom_evidence``, ``replacement_pid``,
    ``last_rss_bytes``); ``memory_limits``: worker pid -> cgroup limit in
    bytes; ``pool_capacity``: ``pool_size + max_overflow`` when told, else
    None; ``pools``: the pool figures the task sampler read in each worker
    (:func:`profiler.capture.pool_log.read`'s columns; None or empty when
    none was read); ``served_rps``: requests per second the load recorded
    (None when no load was recorded); ``targets``: the session's worker PIDs.
    Times are epoch seconds on our clock.
    """

    episodes: pd.DataFrame
    held: pd.DataFrame
    hold_profile: Counter[str]
    wait_samples: pd.DataFrame
    rss: pd.DataFrame
    workers: pd.DataFrame
    memory_limits: dict[int, int]
    pool_capacity: int | None
    session_start: float
    session_end: float
    hold_owners: dict[str, list[int]] = field(default_factory=dict)
    hold_kinds: dict[str, str] = field(default_factory=dict)
    pools: pd.DataFrame | None = None
    served_rps: float | None = None
    targets: tuple[int, ...] = ()

    @classmethod
    def empty(cls, *, session_start: float = 0.0, session_end: float = 0.0) -> Evidence:
        """No rows anywhere: a base to :func:`dataclasses.replace` parts into."""
        from profiler.analysis.columns import empty_frame
        from profiler.analysis.episodes import empty_episodes
        from profiler.analysis.held_counts import empty_held

        return cls(
            episodes=empty_episodes(),
            held=empty_held(),
            hold_profile=Counter(),
            wait_samples=empty_frame(
                {
                    "worker_pid": "int64",
                    "taken_at": "float64",
                    "stack": "object",
                    "active": "bool",
                }
            ),
            rss=empty_frame(
                {
                    "taken_at": "float64",
                    "worker_pid": "int64",
                    "rss_bytes": "int64",
                }
            ),
            workers=empty_frame(
                {
                    "time": "float64",
                    "pid": "int64",
                    "event": "object",
                    "exit": "object",
                    "oom_evidence": "object",
                    "replacement_pid": "Int64",
                    "last_rss_bytes": "Int64",
                }
            ),
            memory_limits={},
            pool_capacity=None,
            session_start=session_start,
            session_end=session_end,
        )
