"""Where the holding workers were while they held a transaction: their stacks, weighted.

Given the episodes (:func:`profiler.analysis.episodes.held_episodes`) and the
owner workers' stack samples (py-spy dumps, or task-sampler rounds), through the
join of :mod:`profiler.analysis.sample_pairs`:

* :func:`stacks_during`: the owning worker's stacks while it held each one;
* :func:`hold_profile`: stacks weighted by connection-seconds held, for a
  flamegraph of "where were we while holding a connection";
* :func:`hold_attribution`: the same, with the workers behind each stack.

Pure functions (no I/O, no clock: time comes from the samples). Stack
``taken_at`` may be datetimes (as the readers give them) or epoch floats.

What stacks can say about a held connection depends on the worker:

* A threaded (sync) worker runs a request on one thread from start to end; the
  thread holding the connection is usually the one in database or ORM code
  (or in whatever slow call it makes between two statements), so the worker's
  stacks during an episode do show the holder, next to its other threads
  (``threads="active"`` drops the ones py-spy sees waiting).
* An asyncio worker holds a session in a coroutine; while that coroutine is
  suspended at ``await`` (say, awaiting a downstream HTTP call with the
  transaction open) it is on no thread's stack, so py-spy cannot see it at
  all. Stacks during such an episode show what the event loop did meanwhile,
  often nothing (idle in ``select``/``epoll``) or other requests, not the
  holder. Read them as "what else this worker was doing", and find the holder
  from the episode's queries and ``application_name``, or with task-aware
  tooling.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Literal

import numpy as np

from profiler.analysis.columns import empty_frame
from profiler.analysis.sample_pairs import pair_samples
from profiler.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

Threads = Literal["all", "active"]

STACKS_DURING_COLUMNS = ("episode_id", "stack", "samples", "share")


def stacks_during(
    episodes: pd.DataFrame, samples: pd.DataFrame, *, threads: Threads = "all"
) -> pd.DataFrame:
    """The owning worker's stacks during each episode, folded.

    A sample belongs to an episode when its ``worker_pid`` is the episode's
    ``owner_pid`` and ``start <= taken_at <= start + duration``: while the
    transaction was seen open (after its last sighting it may have ended at
    once; ``end`` is only an upper bound). Episodes without an owner,
    or without samples, have no rows. ``threads="active"`` keeps only samples
    py-spy saw running (``active``).

    Columns: ``episode_id``, ``stack`` (collapsed, outermost first),
    ``samples``, ``share`` (of the episode's samples); heaviest first within
    an episode.

    What can be attributed: for a threaded (sync) worker the holder is usually
    the thread in database code; for an asyncio worker a coroutine suspended
    at ``await`` while holding a session is on no thread's stack, so these are
    the event loop's other work (often idle in ``select``), not the holder's.
    See the module docstring.
    """
    import pandas as pd

    pairs = pair_samples(episodes, samples, threads)
    episode, code, categories = pairs.episode, pairs.code, pairs.categories
    if episode.size == 0:
        return empty_stacks_during()
    width = np.int64(len(categories))
    unique, counts = np.unique(episode * width + code, return_counts=True)
    pair_ep, pair_code = unique // width, unique % width
    totals = np.bincount(episode)
    alphabetical = np.argsort(np.argsort(np.asarray(categories, dtype=object)))
    order = np.lexsort((alphabetical[pair_code], -counts, pair_ep))
    pair_ep, pair_code, counts = pair_ep[order], pair_code[order], counts[order]
    frame: pd.DataFrame = pd.DataFrame(
        {
            "episode_id": pair_ep,
            "stack": pd.Categorical.from_codes(pair_code, categories=pd.Index(categories)),
            "samples": counts.astype(np.int64),
            "share": counts / totals[pair_ep],
        }
    )
    return frame


def hold_profile(
    episodes: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    interval: float,
    threads: Threads = "all",
) -> Counter[str]:
    """Stacks weighted by connection time held, in milliseconds (flamegraphs want integers).

    Each dump of a worker inside one of its episodes counts ``interval``
    seconds (the dump interval) for each of that worker's episodes open at
    that instant, shared equally among the threads that dump saw (so a
    worker's total is its connection-seconds held, whatever its thread
    count): a one-thread worker holding 4 connections while in stack S
    accrues 4x ``interval`` on S.

    Task samples (:mod:`profiler.capture.task_log`: one row per asyncio task,
    with the ``backends`` its frames referenced) are samples too: a task
    is a "thread" of its round. When, in one round, some task names the
    episode's backend, the episode's time goes to those tasks alone (exact
    attribution); otherwise it is shared among every task of the round.

    The result renders with :func:`profiler.render.flamegraph.render_svg`
    (``unit="ms held"``). Without task samples, the limits of
    :func:`stacks_during` hold: for asyncio workers the weight lands on
    whatever the loop did while the holder was suspended.
    """
    return hold_attribution(episodes, samples, interval=interval, threads=threads)[0]


def hold_attribution(
    episodes: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    interval: float,
    threads: Threads = "all",
) -> tuple[Counter[str], dict[str, list[int]]]:
    """:func:`hold_profile`, and for each of its stacks the owner PIDs whose episodes gave it
    weight (a finding names the workers, not only the code)."""
    if not interval > 0:
        raise UsageError(
            f"interval must be positive, not {interval}", hint="pass the dump interval"
        )
    pairs = pair_samples(episodes, samples, threads)
    profile: Counter[str] = Counter()
    owners: dict[str, list[int]] = {}
    if pairs.episode.size == 0:
        return profile, owners
    categories = pairs.categories
    counts = np.bincount(pairs.code, weights=pairs.weight, minlength=len(categories))
    owner = episodes["owner_pid"].to_numpy(dtype=np.int64, na_value=-1)[pairs.episode]
    width = np.int64(max(int(owner.max()), 0) + 2)  # one int64 key per (stack, owner):
    keys = np.unique(pairs.code * width + (owner + 1))  # 20x faster than unique(axis=1)
    by_code = np.stack([keys // width, keys % width - 1])
    for index in np.flatnonzero(counts):
        millis = round(float(counts[index]) * interval * 1000)
        if millis > 0:
            profile[categories[index]] = millis
    for code, pid in by_code.T.tolist():
        stack = categories[code]
        if stack in profile and pid >= 0:
            owners.setdefault(stack, []).append(int(pid))
    return profile, owners


def empty_stacks_during() -> pd.DataFrame:
    return empty_frame(
        {
            "episode_id": "int64",
            "stack": "category",
            "samples": "int64",
            "share": "float64",
        }
    )
