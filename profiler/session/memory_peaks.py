"""What memray saw at each worker's peak, kept in the session for the Diagnosis.

The Diagnosis is pure (:mod:`profiler.analysis.memory_cause`): it reads no
capture. So at the end of ``session run`` the mem probe writes, per memray
capture, ``mem/peak-PID.json``: the bytes live at the capture's high-water mark
per Python stack (the :data:`TOP_STACKS` heaviest), each stack collapsed into
``outer (file:line);...;inner (file:line)`` labels like the task sampler's, its
files shortened by the worker's own ``sys.path`` (from its task samples' header)
so the two join on handler names and read alike. A worker OOM-killed mid-session
left a capture memray never closed; it is read as far as it goes, which is to
the kill: its peak is the memory the kernel reclaimed.

Only the high-water mark is read (one pass), not the totals a report adds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.memory_cause import WorkerPeak
from profiler.capture.task_log import sys_path_prefixes

PEAK_GLOB = "peak-*.json"
TOP_STACKS = 200
FORMAT = "profiler-memory-peak"


@dataclass(frozen=True, slots=True)
class PeakFile:
    """A written ``peak-PID.json``, or why a capture gave none."""

    path: Path | None
    error: str | None = None


def record_peak(capture: Path, tasks_dir: Path) -> PeakFile:
    """Write ``peak-PID.json`` next to ``capture`` (``memray-PID.bin``); an unreadable capture
    is an error to note, not a failure of the session."""
    from profiler.errors import InputError
    from profiler.memory.lz4_frame import lz4_frame_state
    from profiler.memory.reader import collapsed_peak

    try:
        read = collapsed_peak(capture, lambda pid: _sys_path(tasks_dir / f"tasks-{pid}.jsonl"))
        pid, peak, stacks = read.pid, read.peak_bytes, read.stacks
        closed = lz4_frame_state(capture) == "whole"
    except InputError as exc:
        return PeakFile(None, exc.message)
    except Exception as exc:  # memray raises OSError, ValueError, RuntimeError on a cut file
        return PeakFile(None, f"{capture.name}: {type(exc).__name__}: {exc}")
    ranked = sorted(stacks.items(), key=lambda item: (-item[1][0], item[0]))
    document: dict[str, Any] = {
        "format": FORMAT,
        "pid": pid,
        "peak_bytes": peak,
        "tracked_bytes": sum(size for size, _ in stacks.values()),
        "closed": closed,
        "stacks": [
            {"stack": stack, "bytes": size, "allocations": count}
            for stack, (size, count) in ranked[:TOP_STACKS]
        ],
    }
    path = capture.with_name(f"peak-{pid}.json")
    path.write_text(json.dumps(document, sort_keys=True) + "\n")
    return PeakFile(path)


def read_peaks(mem_dir: Path) -> list[WorkerPeak]:
    """Every ``peak-PID.json`` of a session, by pid; an unreadable one is skipped."""
    found = []
    for path in sorted(mem_dir.glob(PEAK_GLOB)):
        try:
            raw = json.loads(path.read_text())
            found.append(
                WorkerPeak(
                    pid=int(raw["pid"]),
                    peak_bytes=int(raw["peak_bytes"]),
                    tracked_bytes=int(raw["tracked_bytes"]),
                    closed=bool(raw["closed"]),
                    stacks=tuple((str(s["stack"]), int(s["bytes"])) for s in raw["stacks"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda peak: peak.pid)


def _sys_path(tasks_file: Path) -> list[str]:
    """The worker's ``sys.path`` entries, longest first, from its task samples' header."""
    try:
        with tasks_file.open() as handle:
            header = json.loads(handle.readline())
    except (OSError, ValueError):
        return []
    return sys_path_prefixes(header)
