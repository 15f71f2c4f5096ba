"""The diagnosis: each cause a session shows, with the code to change and the fix.

Only the records live here for now: the ``diagnosis`` branch fills
:attr:`profiler.session.summary.Summary.diagnosis`; the findings page renders
whatever it holds (and falls back to the merged findings when it is empty).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Where:
    file: str
    line: int
    function: str
    role: str  # "handler"|"dependency"|"middleware"|"slow call"


@dataclass(frozen=True, slots=True)
class Cause:
    cause: str
    title: str
    mechanism: list[str]
    where: list[Where]
    fix: str
    fix_link: str
    evidence: list[str]
    severity: str
