"""Helpers every rule family uses: episodes as rows, sample kinds, plain values, text."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.analysis.code_paths import CodePath, describe
from profiler.analysis.columns import epoch_seconds, floats
from profiler.analysis.findings.records import QUERY_CHARS, TITLE_QUERY_CHARS, Finding

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd


def _by_code_path(
    weights: Mapping[str, int],
) -> tuple[dict[str, CodePath], list[tuple[str, int]], dict[str, str]]:
    """Stack weights summed by code path: each path by its display, the displays with
    their sums heaviest first (ties by display), and each stack's display. Stacks
    weighing nothing are left out."""
    paths: dict[str, CodePath] = {}  # by display: a CodePath holds a list, no hash
    sums: Counter[str] = Counter()
    display_of: dict[str, str] = {}
    for stack, weight in weights.items():
        if weight <= 0:
            continue
        path = describe(stack)
        paths.setdefault(path.display, path)
        sums[path.display] += weight
        display_of[stack] = path.display
    return paths, sorted(sums.items(), key=lambda item: (-item[1], item[0])), display_of


def _sample_kinds(
    samples: pd.DataFrame, *kinds: Callable[[str], bool]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], list[npt.NDArray[np.bool_]]]:
    """Each sample's worker, time (epoch) and, per predicate, whether its stack is of that kind.

    Each distinct stack is classified once: a session repeats few stacks many times.
    """
    import pandas as pd

    if samples.empty:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), [np.zeros(0, bool) for _ in kinds]
    codes, uniques = pd.factorize(samples["stack"])
    valid = codes >= 0
    masks = []
    for kind in kinds:
        per_stack = np.array([kind(str(stack)) for stack in uniques], dtype=bool)
        mask = np.zeros(len(samples), dtype=bool)
        if per_stack.size:
            mask[valid] = per_stack[codes[valid]]
        masks.append(mask)
    return (
        samples["worker_pid"].to_numpy(dtype=np.int64),
        epoch_seconds(samples["taken_at"]),
        masks,
    )


def _held_series(
    held: pd.DataFrame, pid: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """A worker's snapshot times and transactions held then, in time order."""
    mine = held[(held["owner_pid"] == pid).fillna(False).to_numpy(dtype=bool)]
    order = np.argsort(floats(mine["taken_at"]), kind="stable")
    return floats(mine["taken_at"])[order], mine["held"].to_numpy(dtype=np.int64)[order]


def _latest(
    taken: npt.NDArray[np.float64],
    values: npt.NDArray[Any],
    times: npt.NDArray[np.float64],
    *,
    before: Any,
) -> npt.NDArray[Any]:
    """Per time, ``values`` at the latest snapshot at or before it; ``before`` ahead of the
    first snapshot."""
    at = np.searchsorted(taken, times, side="right") - 1
    return np.where(at >= 0, values[np.maximum(at, 0)] if values.size else before, before)


# -- episodes as rows -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EpisodeRow:
    owner_pid: int | None
    owner_cmdline: str | None
    owner_label: str | None  # the pooler's "pgbouncer 1234 (pooler)" when no worker is known
    query: str | None  # normalised last_query
    max_idle_age: float
    idle_seconds: float
    open: bool


def _idle_beyond(
    episodes: pd.DataFrame, seconds: float, *, inclusive: bool = False
) -> pd.DataFrame:
    """Episodes whose longest idle-in-transaction period is over (or at least) ``seconds``."""
    if episodes.empty:
        return episodes
    ages = floats(episodes["max_idle_age"])
    with np.errstate(invalid="ignore"):
        chosen = ages >= seconds if inclusive else ages > seconds
    selected: pd.DataFrame = episodes[chosen & ~np.isnan(ages)]
    return selected


def _episode_rows(episodes: pd.DataFrame) -> list[_EpisodeRow]:
    owners = episodes["owner_pid"].to_numpy(dtype=np.float64, na_value=np.nan)
    cmdlines = _objects(episodes, "owner_cmdline")
    labels = _objects(episodes, "owner_label")
    queries = _objects(episodes, "last_query")
    ages = floats(episodes["max_idle_age"])
    idle = np.nan_to_num(floats(episodes["idle_seconds"]))
    still_open = episodes["open"].to_numpy(dtype=bool)
    return [
        _EpisodeRow(
            owner_pid=None if math.isnan(owners[i]) else int(owners[i]),
            owner_cmdline=_text(cmdlines[i]),
            owner_label=_text(labels[i]),
            query=normalise_query(_text(queries[i])),
            max_idle_age=float(ages[i]),
            idle_seconds=float(idle[i]),
            open=bool(still_open[i]),
        )
        for i in range(len(episodes))
    ]


def _objects(frame: pd.DataFrame, name: str) -> list[Any]:
    if name not in frame.columns:
        return [None] * len(frame)
    return frame[name].astype(object).tolist()


def normalise_query(text: str | None) -> str | None:
    """Whitespace collapsed, cut to :data:`QUERY_CHARS` characters (the last one ``…``).

    >>> normalise_query("SELECT  tools.*\\n  FROM tools")
    'SELECT tools.* FROM tools'
    """
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= QUERY_CHARS else flat[: QUERY_CHARS - 1] + "…"


def _short_query(query: str | None) -> str:
    if query is None:
        return "a transaction (query text not seen)"
    if len(query) > TITLE_QUERY_CHARS:
        query = query[: TITLE_QUERY_CHARS - 4].rstrip() + " ..."
    return f"`{query}`"


# -- plain values and text ------------------------------------------------------------------


def _finding(
    rule: str, severity: str, title: str, evidence: dict[str, Any], score: float
) -> Finding:
    plain = _plain(evidence)
    assert isinstance(plain, dict)
    return Finding(rule, severity, title, plain, float(score))


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/NA to None, tuples and sets to lists."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return None if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text(value: Any) -> str | None:
    if value is None or _missing(value):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    if value is None or _missing(value):
        return None
    return int(value)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _unknown_owner(rows: list[_EpisodeRow]) -> str:
    """``owner unknown``, or ``worker unknown behind pgbouncer 1234 (pooler)``: the pooler
    is named as what it is, never as a worker."""
    labels = sorted({row.owner_label for row in rows if row.owner_pid is None and row.owner_label})
    if not labels:
        return "owner unknown"
    return "worker unknown behind " + ", ".join(labels)


def _workers(pids: list[int]) -> str:
    """``worker 1234``, ``workers 1234, 1235``, ``workers 1, 2, 3, 4, 5 and 2 more``."""
    shown = ", ".join(str(pid) for pid in pids[:5])
    more = f" and {len(pids) - 5} more" if len(pids) > 5 else ""
    return f"{'worker' if len(pids) == 1 else 'workers'} {shown}{more}"
