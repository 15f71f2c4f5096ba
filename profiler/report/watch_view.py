"""The live view of ``profiler db watch``: built from snapshots, rendered with rich."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from profiler.analysis.activity import by_state, idle_in_transaction
from profiler.model import Snapshot
from profiler.report.tables import keep_whole, keep_words

# Idle-in-transaction age buckets, in seconds: where pool trouble starts and grows.
AGE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("< 1 s", 0.0, 1.0),
    ("1-5 s", 1.0, 5.0),
    ("5-30 s", 5.0, 30.0),
    ("30-60 s", 30.0, 60.0),
    ("1-5 min", 60.0, 300.0),
    ("> 5 min", 300.0, float("inf")),
)
TOP_HOLDERS = 10
BAR_WIDTH = 30


def age_histogram(snapshot: Snapshot) -> list[tuple[str, int]]:
    ages = [b.state_age_seconds or 0.0 for b in idle_in_transaction(snapshot)]
    return [(label, sum(low <= a < high for a in ages)) for label, low, high in AGE_BUCKETS]


@dataclass
class WatchView:
    interval: float
    snapshots: int = 0
    latest: Snapshot | None = field(default=None)

    def add(self, snapshot: Snapshot) -> None:
        self.snapshots += 1
        self.latest = snapshot

    def render(self) -> RenderableType:
        snapshot = self.latest
        if snapshot is None:
            return Text("waiting for the first snapshot...")
        title = (
            f"{snapshot.taken_at:%H:%M:%S} · {len(snapshot.backends)} backends · "
            f"{self.snapshots} snapshots every {self.interval:g}s · "
            f"our cost {1000 * (snapshot.fetch_seconds + snapshot.owner_seconds):.1f} ms"
        )
        states = Table("state", "backends", "oldest (s)", title=title)
        for state, summary in by_state(snapshot).items():
            oldest = "" if summary.oldest_seconds is None else f"{summary.oldest_seconds:.1f}"
            states.add_row(state, str(summary.backends), oldest)

        histogram = Table("idle in tx for", "backends", "", title="idle in transaction ages")
        buckets = age_histogram(snapshot)
        peak = max((count for _, count in buckets), default=0) or 1
        for label, count in buckets:
            histogram.add_row(label, str(count), "█" * round(BAR_WIDTH * count / peak))

        holders = Table("age (s)", "pid", "owner", "application", "query", title="longest holders")
        for backend in idle_in_transaction(snapshot)[:TOP_HOLDERS]:
            owner = snapshot.owners.get(backend.pid)
            holders.add_row(
                f"{backend.state_age_seconds or 0:.1f}",
                str(backend.pid),
                "-" if owner is None else owner.describe(),
                backend.application_name or "",
                " ".join((backend.query or "").split())[:60],
            )
        keep_whole(holders, "pid")
        keep_words(holders, "owner")
        return Group(states, histogram, holders)
