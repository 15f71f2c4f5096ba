"""What the flight recorder samples, keeps, and when its rules fire."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from profiler.errors import UsageError
from profiler.units import GIB, KIB, MIB

IDLE_IN_TRANSACTION = "idle-in-transaction"
POOL_AT_CAP = "pool-saturation"
BLOCKED_LOOP = "blocked-event-loop"
RSS_GROWTH = "rss-growth"
MEMORY_LIMIT = "memory-limit"
WORKER_VANISHED = "worker-vanished"
# The rule names are the findings' (profiler.analysis.findings), so an incident's
# rule and the finding `session show` makes of it read alike.
RULES = (
    IDLE_IN_TRANSACTION,
    POOL_AT_CAP,
    BLOCKED_LOOP,
    RSS_GROWTH,
    MEMORY_LIMIT,
    WORKER_VANISHED,
)
MEMORY_RULES = frozenset({RSS_GROWTH, MEMORY_LIMIT, WORKER_VANISHED})
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": KIB * GIB}


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """Thresholds of the live rules; a rule whose threshold is None is off."""

    idle_in_tx_seconds: float = 10.0
    pool_capacity: int | None = None  # pool_size + max_overflow per worker; None: rule off
    pool_at_cap_seconds: float = 5.0
    blocked_loop_samples: int = 1
    rss_growth_bytes_per_minute: float = 50 * MIB
    rss_growth_window: float = 120.0
    memory_limit_fraction: float = 0.9
    memory_limit_bytes: int | None = None  # per worker, when no cgroup limit says it


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Rates, buffer, burst and budget. Defaults: pg 1 Hz, stacks 0.2 Hz, 5 min buffer, a
    5 Hz burst of 20 s, one incident per rule per 10 min, at most 50 kept, 1 GiB."""

    pg_interval: float = 1.0
    stack_interval: float = 5.0
    rss_interval: float = 1.0
    ring_seconds: float = 300.0
    burst_interval: float = 0.2
    burst_seconds: float = 20.0
    cooldown_seconds: float = 600.0
    max_incidents: int = 50
    max_disk_bytes: int = GIB
    mem_on: frozenset[str] = frozenset()
    tasks: bool = True  # inject the asyncio task sampler into the burst's workers
    rediscover_seconds: float = 300.0  # new servers; a master's new workers are seen at once
    rules: RuleSettings = field(default_factory=RuleSettings)

    def __post_init__(self) -> None:
        unknown = sorted(self.mem_on - MEMORY_RULES)
        if unknown:
            raise UsageError(
                f"--mem-on takes a memory rule, not {unknown[0]}",
                hint=f"use one of: {', '.join(r for r in RULES if r in MEMORY_RULES)}",
            )
        if self.burst_interval <= 0 or self.burst_seconds <= 0 or self.ring_seconds <= 0:
            raise UsageError("burst rate, burst duration and ring length must be positive")


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``1048576`` -> bytes (powers of 1024).

    >>> parse_size("2G"), parse_size("500MiB"), parse_size("1024")
    (2147483648, 524288000, 1024)
    """
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"not a size: {text!r}", hint="e.g. 500M, 2G, 1.5GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
