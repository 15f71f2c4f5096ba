"""Which handlers `profiler lint` flagged this session saw holding connections."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profiler.lint import LintResult

_ENDPOINT = re.compile(r"^(?P<route>\S+ \S+)(?: \((?P<name>[^()]*)\))?$")


def lint_seen_holding(linted: LintResult, hold_profile: Mapping[str, int]) -> list[int]:
    """Milliseconds held per lint finding (same order), from the session's hold profile.

    A stack whose frames name a flagged handler (function name and file) goes
    to that handler; otherwise a stack whose root names its request's
    endpoint (``POST /tools/{tool_id}/invoke (invoke_tool)``) goes to the
    handlers serving that route, or of that name when the route differs (a
    prefix lint could not resolve).
    """
    from profiler.analysis.code_paths import ENDPOINT_PREFIX
    from profiler.analysis.collapsed import frames, split_label

    held = [0] * len(linted.findings)
    by_frame = {
        (finding.handler, Path(finding.file).name): index
        for index, finding in enumerate(linted.findings)
    }
    for stack, ms in hold_profile.items():
        if ms <= 0:
            continue
        labels = frames(stack)
        endpoint = None
        if labels and labels[0].startswith(ENDPOINT_PREFIX):
            endpoint, labels = labels[0][len(ENDPOINT_PREFIX) :], labels[1:]
        matched = {
            by_frame[key] for label in labels if (key := _frame_key(split_label(label))) in by_frame
        }
        if not matched and endpoint is not None:
            parsed = _ENDPOINT.match(endpoint)
            route = parsed["route"] if parsed else endpoint
            name = parsed["name"] if parsed else None
            matched = {i for i, f in enumerate(linted.findings) if route in f.routes}
            if not matched and name:
                matched = {i for i, f in enumerate(linted.findings) if f.handler == name}
        for index in matched:
            held[index] += ms
    return held


def _frame_key(label: Any) -> tuple[str, str]:
    return (str(label.name), Path(str(label.file)).name)
