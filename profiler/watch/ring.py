"""The last minutes of what the recorder saw, in memory: what an incident is prepended with.

A deque per kind of item, cut by age on every append, so its size follows
the horizon (5 minutes at 1 Hz is 300 snapshots) whatever the run's length.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Ring(Generic[T]):
    """Items stamped with epoch seconds, older than ``seconds`` before the newest dropped."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._items: deque[tuple[float, T]] = deque()
        self._lock = threading.Lock()

    def add(self, at: float, item: T) -> None:
        with self._lock:
            self._items.append((at, item))
            horizon = at - self.seconds
            while self._items and self._items[0][0] < horizon:
                self._items.popleft()

    def items(self, since: float | None = None) -> list[T]:
        """A copy, oldest first (only those at or after ``since`` when given)."""
        with self._lock:
            return [item for at, item in self._items if since is None or at >= since]

    def oldest(self) -> float | None:
        with self._lock:
            return self._items[0][0] if self._items else None

    def __len__(self) -> int:
        return len(self._items)
