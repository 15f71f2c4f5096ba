"""A memray capture as collapsed stacks, for a flamegraph we render and cap ourselves.

memray's own HTML flamegraph embeds every stack of the capture and its
JavaScript; on big captures it reaches gigabytes (memray issues #987, #484)
and cannot be published. Here the capture's high-water-mark allocation
records (what memray's flamegraph shows by default: the memory live at the
peak) are folded into collapsed stacks weighted by bytes, which
:func:`profiler.report.fold.capped_flamegraph` renders with our
SVG renderer, folding small frames until the file fits its cap.

Frame labels read like py-spy's (``function (file:line)``), with the file
shortened after ``site-packages/`` or the standard library folder, so a
report does not show the build machine's paths and labels stay short.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from profiler.errors import InputError, ProfilerError

if TYPE_CHECKING:
    from profiler.memory.rss import HeapPoint

NO_PYTHON_FRAME = "[no Python frame]"


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    """One capture: bytes live at its peak per stack (outermost first), and its heap over time."""

    path: Path
    pid: int
    profile: Counter[str]
    peak_bytes: int
    heap: list[HeapPoint]


def read_memory_profile(path: Path) -> MemoryProfile:
    """Read ``path`` (``mem/memray-PID.bin``); :class:`InputError` (exit 7) when it is
    unreadable, :class:`~profiler.errors.ToolMissingError` (exit 5) without memray."""
    from profiler.memory.reader import collapsed_peak
    from profiler.memory.rss import from_capture

    try:
        read = collapsed_peak(path)
    except ProfilerError:  # not a capture (exit 7), or no memray here (exit 5)
        raise
    except Exception as exc:  # memray raises OSError, ValueError, RuntimeError, ...
        raise InputError(
            f"{path}: memray cannot read its allocation records ({type(exc).__name__}: {exc})",
            hint="a capture cut short may be unreadable; the rest of the session still is",
        ) from exc
    profile: Counter[str] = Counter()
    for stack, (size, _) in read.stacks.items():
        profile[stack or NO_PYTHON_FRAME] += size
    return MemoryProfile(path, read.pid, profile, read.peak_bytes, from_capture(path))
