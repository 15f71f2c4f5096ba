"""The Diagnosis joined to ``profiler lint``: what the session saw, found in the source.

A cause's ``where`` names functions by the session's frames (``invoke_tool`` at
``profiler/lab/gateway/held.py:113``); ``profiler lint`` on the gateway's
source flags handlers that hold a session across slow work. When one of a
cause's functions is a flagged handler (same name, and one file path ends with
the other: lint's paths are relative to the folder it was given), the cause
gains a mechanism step quoting lint's ``path:line:col: CODE message`` line, so
the reader goes from the runtime evidence to the line to change. Pure.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from profiler.analysis.diagnosis import Cause
    from profiler.lint.model import LintResult

LINT_LINES = 2  # lint lines quoted per cause


def join_lint(causes: list[Cause], linted: LintResult) -> list[Cause]:
    """``causes`` with the lint findings of their functions quoted in their mechanism."""
    joined = []
    for cause in causes:
        lines = []
        for finding in linted.findings:
            if not any(_same(where.function, where.file, finding) for where in cause.where):
                continue
            for rule, text, _ in finding.messages():
                lines.append(
                    f"`profiler lint` flags it in the source: {finding.file}:{finding.line}:"
                    f"{finding.column}: {rule.id} {text}"
                )
        extra = lines[:LINT_LINES]
        joined.append(
            dataclasses.replace(cause, mechanism=[*cause.mechanism, *extra]) if extra else cause
        )
    return joined


def _same(function: str, file: str, finding: object) -> bool:
    handler = str(getattr(finding, "handler", ""))
    path = str(getattr(finding, "file", "")).replace("\\", "/")
    names = {function, function.split(" → ", 1)[0], function.rsplit(".", 1)[-1]}
    if handler not in names:
        return False
    return bool(path) and (file.endswith(path) or path.endswith(file))
