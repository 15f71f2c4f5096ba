"""Collapsed stacks as a speedscope document (https://www.speedscope.app).

speedscope shows what a static flamegraph cannot: a "left heavy" view that
sorts by weight, a sandwich view for callers and callees of one function, and
several workers side by side in one file (one profile each, frames shared).
The format is documented in speedscope's ``src/lib/file-format-spec.ts``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from profiler.analysis import collapsed

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def speedscope_document(
    profiles: Sequence[tuple[str, Mapping[str, int]]],
    *,
    name: str,
    rate_hz: float | None = None,
) -> dict[str, Any]:
    """One ``sampled`` profile per ``(name, stacks)``, frames shared across them.

    With ``rate_hz`` the weights are seconds (count / rate), which speedscope
    formats as time; without it they stay sample counts (unit ``none``), the
    honest choice when workers were sampled at different rates.

    Stacks are written in sorted order: collapsed stacks carry no time, and
    sorted neighbours share prefixes, so speedscope's time-order view draws one
    block per code path rather than a comb. Counts of zero or less are dropped,
    as the flamegraph drops them.
    """
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number, not {rate_hz!r}")
    frames: list[dict[str, Any]] = []
    by_frame: dict[collapsed.FrameLabel, int] = {}
    by_label: dict[str, int] = {}  # so each distinct label is parsed once

    def indexes(labels: list[str]) -> list[int]:
        new = set(labels).difference(by_label)
        for label in labels if new else ():
            if label in new and label not in by_label:  # first seen, in stack order
                parts = collapsed.split_label(label)
                if parts not in by_frame:
                    by_frame[parts] = len(frames)
                    frames.append(_frame(parts))
                by_label[label] = by_frame[parts]
        return list(map(by_label.__getitem__, labels))

    documents: list[dict[str, Any]] = []
    for profile_name, stacks in profiles:
        samples: list[list[int]] = []
        weights: list[float] = []
        for stack in sorted(stacks):
            count = stacks[stack]
            if count <= 0:
                continue
            samples.append(indexes(collapsed.frames(stack)))
            weights.append(count if rate_hz is None else count / rate_hz)
        documents.append(
            {
                "type": "sampled",
                "name": profile_name,
                "unit": "none" if rate_hz is None else "seconds",
                "startValue": 0,
                "endValue": sum(weights) if rate_hz is None else math.fsum(weights),
                "samples": samples,
                "weights": weights,
            }
        )
    return {
        "$schema": SCHEMA,
        "exporter": "profiler",
        "name": name,
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": documents,
    }


def write_speedscope(path: Path, document: Mapping[str, Any]) -> None:
    """Compact JSON: a profile of 50k stacks is mostly numbers, and indentation doubles it.

    ASCII-escaped, so surrogate-escaped file names from the target survive.
    """
    text = json.dumps(document, separators=(",", ":"), sort_keys=True, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def _frame(parts: collapsed.FrameLabel) -> dict[str, Any]:
    """Unknown file or line is left out: speedscope would show ``""`` or 0 as if known."""
    frame: dict[str, Any] = {"name": parts.name}
    if parts.file:
        frame["file"] = parts.file
    if parts.line:
        frame["line"] = parts.line
    return frame
