"""Where each held transaction was held: its holder task's code paths, or its worker's thread
dumps meanwhile."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from profiler.session.reader import Session
    from profiler.session.summary import HoldAttribution

STACKS_PER_EPISODE = 3


def attributed_stacks(
    attributed: HoldAttribution, episodes: pd.DataFrame
) -> dict[int, list[tuple[str, float, float]]]:
    """Per episode attributed from task samples, its code paths: (path, ms, share)."""
    from profiler.analysis.code_paths import describe

    frame = attributed.per_episode
    if frame is None or frame.empty:
        return {}
    wanted = set(episodes["episode_id"].astype(int).tolist())
    chosen = frame[frame["episode_id"].isin(wanted).to_numpy(dtype=bool)]
    totals = chosen.groupby("episode_id")["millis"].sum().to_dict()
    summed: dict[int, dict[str, float]] = {}
    for episode, stack, millis in zip(
        chosen["episode_id"].tolist(),
        chosen["stack"].astype(str).tolist(),
        chosen["millis"].tolist(),
        strict=True,
    ):
        paths = summed.setdefault(int(episode), {})
        display = describe(stack).display
        paths[display] = paths.get(display, 0.0) + float(millis)
    found: dict[int, list[tuple[str, float, float]]] = {}
    for episode, paths in summed.items():
        total = float(totals[episode])
        ranked = sorted(paths.items(), key=lambda item: (-item[1], item[0]))
        found[episode] = [
            (path, millis, millis / total) for path, millis in ranked[:STACKS_PER_EPISODE]
        ]
    return found


def stacks_during(
    session: Session, episodes: pd.DataFrame
) -> dict[int, list[tuple[str, int, float]]]:
    """Per episode of a worker without the task sampler, its thread dumps meanwhile, as code
    paths: (path, samples, share)."""
    from profiler.analysis.code_paths import describe
    from profiler.analysis.hold_stacks import stacks_during
    from profiler.session.summary import attribution_samples

    found: dict[int, list[tuple[str, int, float]]] = {}
    _, threads = attribution_samples(session)  # task-sampled workers: attributed_stacks
    for source in (threads,) if not threads.empty else ():
        during = stacks_during(episodes, source)
        columns = zip(
            during["episode_id"].tolist(),
            during["stack"].astype(str).tolist(),
            during["samples"].tolist(),
            during["share"].tolist(),
            strict=True,
        )
        for episode, stack, samples, share in columns:
            rows = found.setdefault(int(episode), [])
            if len(rows) < STACKS_PER_EPISODE:  # heaviest first within an episode
                rows.append((describe(stack).display, int(samples), float(share)))
    return found
