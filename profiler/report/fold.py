"""Flamegraphs that fit the size cap: small frames folded into their parents until they do."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from profiler import units

SIZE_CAP = 50 * units.MIB
"""Bytes any one published file may weigh."""
FOLD_STEPS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
"""The shares tried in turn when a flamegraph is over the cap."""
FOLDED_LABEL = "[smaller frames folded]"


def fold_small_frames(profile: Mapping[str, int], min_share: float) -> tuple[Counter[str], int]:
    """The profile with every frame under ``min_share`` of the total folded into its parent.

    A stack is cut at its first frame whose inclusive weight is under the
    limit and ends in :data:`FOLDED_LABEL` instead, so the parent keeps its
    width and the picture says something was there. Returns the folded
    profile and how many stacks were cut. Non-positive counts are dropped.

    >>> folded, cut = fold_small_frames({"a;b": 98, "a;c": 1, "a;d": 1}, 0.05)
    >>> sorted(folded.items()), cut
    ([('a;[smaller frames folded]', 2), ('a;b', 98)], 2)
    """
    counts = {stack: count for stack, count in profile.items() if count > 0}
    total = sum(counts.values())
    if min_share <= 0 or total == 0:
        return Counter(counts), 0
    limit = min_share * total
    nodes: dict[tuple[int, str], int] = {}  # (parent node, label) -> node; 0 is the root
    weight = [total]
    paths: list[list[int]] = []
    for stack, count in counts.items():
        node, path = 0, []
        for label in stack.split(";"):
            key = (node, label)
            child = nodes.get(key)
            if child is None:
                child = nodes[key] = len(weight)
                weight.append(0)
            weight[child] += count
            path.append(child)
            node = child
        paths.append(path)
    folded: Counter[str] = Counter()
    cut = 0
    for (stack, count), path in zip(counts.items(), paths, strict=True):
        keep = next((i for i, node in enumerate(path) if weight[node] < limit), None)
        if keep is None:
            folded[stack] += count
            continue
        cut += 1
        folded[";".join([*stack.split(";")[:keep], FOLDED_LABEL])] += count
    return folded, cut


@dataclass(frozen=True, slots=True)
class CappedFlamegraph:
    """A flamegraph that fits the cap, and how much was folded to make it fit."""

    svg: str | None  # None: over the cap even at the coarsest fold
    min_share: float  # 0: nothing folded
    stacks: int
    folded_stacks: int


def capped_flamegraph(
    profile: Mapping[str, int],
    *,
    title: str,
    subtitle: str | None,
    unit: str,
    cap: int = SIZE_CAP,
    min_share: float = 0.0,
) -> CappedFlamegraph:
    """:func:`~profiler.render.flamegraph.render_svg` of ``profile``, folded
    (:func:`fold_small_frames`) at ``min_share``, then at each coarser
    :data:`FOLD_STEPS` share, until the SVG is at most ``cap`` bytes. The
    subtitle says what was folded, so the file explains itself."""
    from profiler.render.flamegraph import render_svg

    stacks = sum(1 for count in profile.values() if count > 0)
    shares = [min_share, *(share for share in FOLD_STEPS if share > min_share)]
    for share in shares:
        folded, cut = fold_small_frames(profile, share)
        note = f"frames under {units.percent(share)} folded into their parents" if cut else None
        text = render_svg(
            folded,
            title=title,
            subtitle="; ".join(part for part in (subtitle, note) if part) or None,
            unit=unit,
        )
        if len(text.encode("utf-8")) <= cap:
            return CappedFlamegraph(text, share if cut else 0.0, stacks, cut)
    return CappedFlamegraph(None, shares[-1], stacks, stacks)
