"""Small statistics that reports and the load generator share."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none.

    Nearest rank returns a value that was observed, which is what a latency
    report should show.

    >>> percentile([10, 20, 30, 40], 50)
    20
    >>> percentile([10, 20, 30, 40], 99)
    40
    >>> percentile([], 50) is None
    True
    """
    if not sorted_values:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[rank - 1]
