"""What memory is attributed to: Python stacks, and the sites they fold into.

memray attributes each allocation to a call stack. A report wants fewer,
bigger rows, so stacks are folded into *sites*: a site is the innermost Python
frame of an allocation's stack, the line that asked for the memory. Every stack
reaching a site is summed into it; the site keeps its heaviest stack (innermost
first) to show who called it. Pure functions over records, no memray import:
the reader (:mod:`profiler.memory.reader`) builds the stacks, the pool
(:mod:`profiler.memory.pool`) and the reports use the sites.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

SITE_STACK_FRAMES = 4
"""Frames kept in ``Site.stack``: the site itself and three callers."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One Python frame: ``function`` running ``file`` at ``line``."""

    function: str
    file: str
    line: int

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "file": self.file, "line": self.line}

    def __str__(self) -> str:
        return f"{self.function} ({self.file}:{self.line})"


UNKNOWN_FRAME = Frame("<unknown>", "<unknown>", 0)
"""The site of allocations made with no Python frame on the stack (C threads, startup)."""

Stack = tuple[Frame, ...]
"""Innermost frame first, as memray's ``stack_trace()`` gives them."""


@dataclass(frozen=True, slots=True)
class StackUsage:
    """Memory attributed to one full Python stack (innermost first)."""

    frames: Stack
    bytes: int
    allocations: int


@dataclass(frozen=True, slots=True)
class Site:
    """Memory whose innermost Python frame is ``frame``, summed over every stack reaching it."""

    frame: Frame
    bytes: int
    allocations: int
    stack: Stack
    """The heaviest stack through this site, innermost first, ``SITE_STACK_FRAMES`` at most."""
    stacks: int
    """How many distinct stacks reach the site."""

    def to_json(self) -> dict[str, Any]:
        return {
            **self.frame.to_json(),
            "bytes": self.bytes,
            "allocations": self.allocations,
            "stack": [frame.to_json() for frame in self.stack],
            "stacks": self.stacks,
        }


def stack_usages(by_stack: dict[Stack, list[int]]) -> tuple[StackUsage, ...]:
    """``{stack: [bytes, allocations]}`` as records, biggest first, ties in file/line order
    (so the same capture always lists the same way)."""
    usages = [StackUsage(frames, size, count) for frames, (size, count) in by_stack.items()]
    return tuple(sorted(usages, key=lambda usage: (-usage.bytes, _stack_order(usage.frames))))


def _stack_order(frames: Stack) -> tuple[tuple[str, int, str], ...]:
    return tuple((frame.file, frame.line, frame.function) for frame in frames)


class _SiteTotals:
    __slots__ = ("allocations", "heaviest", "heaviest_bytes", "size", "stacks")

    def __init__(self) -> None:
        self.size = 0
        self.allocations = 0
        self.stacks = 0
        self.heaviest: Stack = ()
        self.heaviest_bytes = -1


def sites(stacks: Iterable[StackUsage]) -> tuple[Site, ...]:
    """Fold stacks into sites (innermost frame), biggest first, ties in file/line order.

    >>> a, b = Frame("f", "m.py", 1), Frame("g", "m.py", 9)
    >>> [(s.frame.function, s.bytes, s.stacks) for s in sites(
    ...     [StackUsage((a, b), 10, 1), StackUsage((a,), 5, 2), StackUsage((b,), 12, 1)])]
    [('f', 15, 2), ('g', 12, 1)]
    """
    totals: dict[Frame, _SiteTotals] = {}
    for usage in stacks:
        site = usage.frames[0] if usage.frames else UNKNOWN_FRAME
        entry = totals.get(site)
        if entry is None:
            entry = totals[site] = _SiteTotals()
        entry.size += usage.bytes
        entry.allocations += usage.allocations
        entry.stacks += 1
        if usage.bytes > entry.heaviest_bytes:
            entry.heaviest, entry.heaviest_bytes = usage.frames, usage.bytes
    result = [
        Site(
            frame=site,
            bytes=entry.size,
            allocations=entry.allocations,
            stack=entry.heaviest[:SITE_STACK_FRAMES] or (site,),
            stacks=entry.stacks,
        )
        for site, entry in totals.items()
    ]
    return tuple(sorted(result, key=lambda s: (-s.bytes, s.frame.file, s.frame.line)))


_PACKAGES_ROOT = re.compile(r"^.*/(?:site-packages|dist-packages)/")
_STDLIB_ROOT = re.compile(r"^.*?/lib(?:64)?/python\d+\.\d+t?/")


def short_file(filename: str, prefixes: Sequence[str] = ()) -> str:
    """The file as a reader wants it: without the longest of ``prefixes`` (a worker's
    ``sys.path``, longest first) it lies under, else the part after ``site-packages/`` or
    the stdlib folder.

    >>> short_file("/venv/lib/python3.12/site-packages/sqlalchemy/engine/base.py")
    'sqlalchemy/engine/base.py'
    >>> short_file("/usr/lib/python3.12/json/decoder.py")
    'json/decoder.py'
    >>> short_file("/srv/app/main.py")
    '/srv/app/main.py'
    >>> short_file("/srv/app/main.py", ["/srv/app/"])
    'main.py'
    """
    path = filename.replace("\\", "/")
    for prefix in prefixes:
        if path.startswith(prefix):
            return path[len(prefix) :]
    shorter = _PACKAGES_ROOT.sub("", path, count=1)
    return shorter if shorter != path else _STDLIB_ROOT.sub("", path, count=1)


def frame_label(
    frame: tuple[str, str, int],
    cache: dict[tuple[str, str, int], str],
    prefixes: Sequence[str] = (),
) -> str:
    """A memray frame ``(function, file, line)`` as a collapsed-stack label,
    ``function (short file:line)``; ``cache`` keeps each frame's label (a capture repeats
    its frames millions of times)."""
    label = cache.get(frame)
    if label is None:
        function, filename, line = frame
        # ";" separates frames in collapsed stacks: never inside a label
        label = f"{function} ({short_file(str(filename), prefixes)}:{line})".replace(";", ",")
        cache[frame] = label
    return label
