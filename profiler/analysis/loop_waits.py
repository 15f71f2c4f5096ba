"""Event loops waiting on the database: a sync query run inside ``async def``.

A query through a sync ``Session`` in an ``async def`` handler runs on the
event loop thread: while the database works, no other request of the worker
moves. py-spy's thread samples show it as the loop thread *idle* (off CPU)
inside a database call (:func:`~profiler.analysis.stack_kinds.is_database_call`).
A few such samples are any gateway's fast queries; a large share of the loop's
samples is a loop that spends its time waiting on the database.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from profiler.analysis.findings.common import _sample_kinds
from profiler.analysis.stack_kinds import is_database_call, is_event_loop

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class LoopWaits:
    """Loop samples and those idle in a database call, per worker; the waiting stacks."""

    loop_samples: dict[int, int] = field(default_factory=dict)
    waiting: dict[int, int] = field(default_factory=dict)
    stacks: Counter[str] = field(default_factory=Counter)

    def share(self, pid: int) -> float:
        return (
            self.waiting.get(pid, 0) / self.loop_samples[pid] if self.loop_samples.get(pid) else 0.0
        )

    @property
    def worst(self) -> tuple[int, float] | None:
        """The worker whose loop waited most (by share), and that share."""
        if not self.waiting:
            return None
        pid = max(self.waiting, key=lambda p: (self.share(p), -p))
        return pid, self.share(pid)


def loop_database_waits(samples: pd.DataFrame | None) -> LoopWaits:
    """Per worker, its loop thread's samples and those idle in a database call."""
    if samples is None or samples.empty:
        return LoopWaits()
    worker, _, (loop, database) = _sample_kinds(samples, is_event_loop, is_database_call)
    idle = (
        ~samples["active"].to_numpy(dtype=bool, na_value=False)
        if "active" in samples.columns
        else np.ones(len(samples), dtype=bool)
    )
    waiting = loop & database & idle
    stacks = Counter(samples["stack"].astype(str).to_numpy()[waiting].tolist())
    return LoopWaits(
        loop_samples=dict(Counter(worker[loop].tolist())),
        waiting=dict(Counter(worker[waiting].tolist())),
        stacks=stacks,
    )
