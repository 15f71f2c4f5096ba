"""The live rules: what, in the stream the recorder sees, is an incident worth a burst.

Pure: no I/O and no clock. Time comes from the samples (our clock: a
snapshot's ``taken_at``, a stack sample's, an RSS point's), so the rules
are tested on made-up streams and give the same answer on a replay. Each rule
names the workers a burst should look at (the *owners*): the processes
holding the idle transactions, the worker at its pool's cap, the worker
whose loop is blocked or whose memory grows. Firing again is the recorder's
decision (cooldown per rule), not the rules': a rule says "now" whenever its
condition holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from profiler import units
from profiler.analysis.activity import client_backends, idle_in_transaction
from profiler.analysis.stack_kinds import is_blocked_on_pool, is_event_loop
from profiler.capture.stacks import StackSample
from profiler.model import Snapshot
from profiler.watch.settings import (
    BLOCKED_LOOP,
    IDLE_IN_TRANSACTION,
    MEMORY_LIMIT,
    POOL_AT_CAP,
    RSS_GROWTH,
    WORKER_VANISHED,
    RuleSettings,
)


@dataclass(frozen=True, slots=True)
class Trigger:
    """A rule fired at ``at`` (epoch, our clock) because of ``pids``.

    ``crossed_at`` is when the condition became true as far as the samples
    tell (an idle transaction's ``state_change`` plus the threshold), so the
    delay between the two is the recorder's reaction time.
    """

    rule: str
    at: float
    pids: tuple[int, ...]
    reason: str
    crossed_at: float | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "fired_at": round(self.at, 6),
            "crossed_at": None if self.crossed_at is None else round(self.crossed_at, 6),
            "pids": list(self.pids),
            "reason": self.reason,
            "evidence": dict(self.evidence),
        }


class LiveRules:
    """Every rule's state; feed it what the recorder samples, get the triggers back."""

    def __init__(self, settings: RuleSettings) -> None:
        self.settings = settings
        self._at_cap_since: dict[int, float] = {}
        self._blocked: dict[int, deque[float]] = {}
        self._rss: dict[int, deque[tuple[float, int]]] = {}

    # -- pg_stat_activity -------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> list[Trigger]:
        triggers = [self._idle(snapshot)]
        triggers += self._pool(snapshot)
        return [t for t in triggers if t is not None]

    def _idle(self, snapshot: Snapshot) -> Trigger | None:
        threshold = self.settings.idle_in_tx_seconds
        held = [b for b in idle_in_transaction(snapshot) if (b.state_age_seconds or 0) > threshold]
        if not held:
            return None
        at = snapshot.taken_at.timestamp()
        offset = at - held[0].sampled_at  # server clock -> ours
        changes = [b.state_change for b in held if b.state_change is not None]
        crossed = min(changes) + threshold + offset if changes else None
        owners = [snapshot.owners.get(b.pid) for b in held]
        pids = sorted({o.pid for o in owners if o is not None and o.pid is not None})
        oldest = held[0].state_age_seconds or 0.0
        return Trigger(
            IDLE_IN_TRANSACTION,
            at,
            tuple(pids),
            f"{len(held)} transaction(s) idle longer than {units.seconds(threshold)} "
            f"(oldest {units.seconds(oldest, 1)})",
            crossed,
            {
                "backends": [b.pid for b in held],
                "oldest_seconds": round(oldest, 3),
                "threshold_seconds": threshold,
            },
        )

    def _pool(self, snapshot: Snapshot) -> list[Trigger]:
        capacity = self.settings.pool_capacity
        if capacity is None:
            return []
        at = snapshot.taken_at.timestamp()
        counts = checked_out(snapshot)
        for pid in list(self._at_cap_since):
            if counts.get(pid, 0) < capacity:
                del self._at_cap_since[pid]
        fired: list[Trigger] = []
        for pid, count in sorted(counts.items()):
            if count < capacity:
                continue
            since = self._at_cap_since.setdefault(pid, at)
            if at - since >= self.settings.pool_at_cap_seconds:
                fired.append(
                    Trigger(
                        POOL_AT_CAP,
                        at,
                        (pid,),
                        f"worker {pid} at its pool's cap ({count}/{capacity}) "
                        f"for {units.seconds(at - since, 0)}",
                        since + self.settings.pool_at_cap_seconds,
                        {"worker_pid": pid, "checked_out": count, "capacity": capacity},
                    )
                )
        return fired

    # -- stacks -------------------------------------------------------------------------

    def on_stacks(self, samples: Iterable[StackSample]) -> list[Trigger]:
        """One round of dumps: a worker's event loop thread asleep in a pool's checkout."""
        blocked: dict[int, float] = {}
        for sample in samples:
            folded = sample.folded()
            if is_event_loop(folded) and is_blocked_on_pool(folded):
                blocked[sample.worker_pid] = sample.taken_at.timestamp()
        fired: list[Trigger] = []
        for pid, at in sorted(blocked.items()):
            seen = self._blocked.setdefault(pid, deque(maxlen=self.settings.blocked_loop_samples))
            seen.append(at)
            if len(seen) >= self.settings.blocked_loop_samples:
                fired.append(
                    Trigger(
                        BLOCKED_LOOP,
                        at,
                        (pid,),
                        f"worker {pid}'s event loop asleep in a pool checkout",
                        seen[0],
                        {"worker_pid": pid, "blocked_samples": len(seen)},
                    )
                )
        return fired

    # -- memory -------------------------------------------------------------------------

    def on_rss(self, pid: int, at: float, rss: int, limit: int | None) -> list[Trigger]:
        """One RSS point of worker ``pid``; ``limit``: its cgroup's memory limit, if any."""
        fired: list[Trigger] = []
        history = self._rss.setdefault(pid, deque())
        history.append((at, rss))
        window = self.settings.rss_growth_window
        while history and history[0][0] < at - window:
            history.popleft()
        first_at, first = history[0]
        span = at - first_at
        rate = (rss - first) / span * 60 if span > 0 else 0.0
        if span >= window / 2 and rate >= self.settings.rss_growth_bytes_per_minute:
            fired.append(
                Trigger(
                    RSS_GROWTH,
                    at,
                    (pid,),
                    f"worker {pid} grew {units.size(rate)}/min over {units.seconds(span, 0)}",
                    None,
                    {"worker_pid": pid, "bytes_per_minute": round(rate), "rss_bytes": rss},
                )
            )
        cap = limit if limit is not None else self.settings.memory_limit_bytes
        if cap and rss >= self.settings.memory_limit_fraction * cap:
            fired.append(
                Trigger(
                    MEMORY_LIMIT,
                    at,
                    (pid,),
                    f"worker {pid} at {units.percent(rss / cap)} of its {units.size(cap)} limit",
                    None,
                    {"worker_pid": pid, "rss_bytes": rss, "limit_bytes": cap},
                )
            )
        return fired

    def forget(self, pid: int) -> None:
        """A worker gone: its history must not make its PID's next owner look like growth."""
        self._rss.pop(pid, None)
        self._blocked.pop(pid, None)
        self._at_cap_since.pop(pid, None)

    # -- membership -----------------------------------------------------------------------

    @staticmethod
    def on_worker_event(
        event: Mapping[str, Any], survivors: Iterable[int], at: float
    ) -> Trigger | None:
        """A ``workers.jsonl`` record (:mod:`profiler.targets.membership`): a worker vanished.

        The vanished worker cannot be dumped: the burst looks at ``survivors``,
        which carry the same load and often the same fate. The record comes once
        its replacement is known, so it fires at ``at`` (when it was read), and
        the exit itself is ``crossed_at``.
        """
        if event.get("event") not in ("vanished", "master-vanished"):
            return None
        pid, how = int(event["pid"]), str(event.get("exit") or "unknown")
        return Trigger(
            WORKER_VANISHED,
            at,
            tuple(sorted(p for p in survivors if p != pid)),
            f"worker {pid} vanished ({how})",
            float(event["time"]),
            {"worker_pid": pid, "exit": how, "replacement_pid": event.get("replacement_pid")},
        )


def checked_out(snapshot: Snapshot) -> dict[int, int]:
    """Connections each owning process has checked out of its pool: in a transaction or
    running a query (a pooled connection given back is ``idle``, outside a transaction)."""
    counts: dict[int, int] = {}
    for backend in client_backends(snapshot):
        owner = snapshot.owners.get(backend.pid)
        if owner is None or owner.pid is None:
            continue
        if backend.in_transaction or backend.state == "active":
            counts[owner.pid] = counts.get(owner.pid, 0) + 1
    return counts
