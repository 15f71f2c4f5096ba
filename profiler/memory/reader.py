"""Reading one memray capture: its metadata, its sites at the peak and by total allocated.

``read_capture`` reads a capture through memray's ``FileReader`` (two passes at
most: the high-water mark, then every allocation, streamed and folded per call
stack into :mod:`profiler.memory.stacks` records). A capture memray never closed
or cut short is read as far as it goes, with warnings, because a killed worker's
capture is often the one that matters. ``combine`` (:mod:`profiler.memory.pool`)
sums several captures, one per worker.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import InputError, ToolMissingError
from profiler.memory.lz4_frame import lz4_frame_state
from profiler.memory.stacks import (
    Frame,
    Site,
    Stack,
    StackUsage,
    frame_label,
    sites,
    stack_usages,
)

if TYPE_CHECKING:
    from memray import FileReader

NEVER_CLOSED_SLACK = timedelta(milliseconds=250)
CAPTURE_HINT = (
    "pass a file written by `memray run -o`, `memray attach -o` or `profiler mem attach`; "
    "a capture cut short after memray compressed it cannot be read"
)


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    """One capture: its metadata, its sites at the peak and by total allocated."""

    path: Path
    pid: int
    command_line: str
    python_allocator: str
    native_traces: bool
    trace_python_allocators: bool
    aggregated: bool
    start_time: datetime
    end_time: datetime | None
    """None when the capture was never closed and holds no memory snapshot to date it."""
    duration_seconds: float | None
    peak_memory_bytes: int
    total_allocations: int | None
    """Allocations (not frees) over the whole capture; None for aggregated captures."""
    total_allocated_bytes: int | None
    complete: bool
    """False when memray never closed the capture or could not read all of it."""
    warnings: tuple[str, ...]
    by_peak: tuple[Site, ...]
    """Every site, by bytes live at the high-water mark, biggest first."""
    by_total: tuple[Site, ...] | None
    """Every site, by bytes allocated over the capture; None for aggregated captures."""
    peak_stacks: tuple[StackUsage, ...] = field(repr=False)
    """The full stacks live at the peak, biggest first: enough for a flamegraph."""

    def to_json(self, top: int = 10) -> dict[str, Any]:
        """The ``captures[]`` item of ``profiler mem report --json`` (without ``reports``)."""
        return {
            "path": str(self.path),
            "pid": self.pid,
            "command_line": self.command_line,
            "python_allocator": self.python_allocator,
            "native_traces": self.native_traces,
            "trace_python_allocators": self.trace_python_allocators,
            "aggregated": self.aggregated,
            "start_time": self.start_time.isoformat(),
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "duration_seconds": self.duration_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "total_allocations": self.total_allocations,
            "total_allocated_bytes": self.total_allocated_bytes,
            "complete": self.complete,
            "warnings": list(self.warnings),
            "top_by_peak": [site.to_json() for site in self.by_peak[:top]],
            "top_by_total": None
            if self.by_total is None
            else [site.to_json() for site in self.by_total[:top]],
        }


def require_memray() -> None:
    """Raise ``ToolMissingError`` (exit 5) unless memray imports in this interpreter."""
    try:
        import memray  # noqa: F401
    except ImportError as exc:
        raise ToolMissingError(
            f"memray cannot be imported by profiler's Python ({exc})",
            hint=f"install it: {sys.executable} -m pip install memray",
        ) from exc


def open_reader(path: Path) -> FileReader:
    """memray's reader for ``path``; ``InputError`` (exit 7) when it is missing or unreadable."""
    require_memray()
    from memray import FileReader

    if not path.exists():
        raise InputError(f"{path}: no such file", hint=CAPTURE_HINT)
    if not path.is_file():
        raise InputError(f"{path}: not a file", hint=CAPTURE_HINT)
    try:
        return FileReader(path)
    except Exception as exc:  # memray raises OSError, ValueError, ...: all mean unreadable
        raise InputError(
            f"{path} is not a readable memray capture ({_reason(exc)})", hint=CAPTURE_HINT
        ) from exc


@dataclass(frozen=True, slots=True)
class CollapsedPeak:
    """A capture's high-water mark as collapsed stacks: what a flamegraph and a peak file read."""

    pid: int
    peak_bytes: int
    stacks: dict[str, list[int]]
    """``outer (file:line);...;inner (file:line)`` (empty: no Python frame) to
    ``[bytes, allocations]`` live at the peak, in the order memray gave the stacks."""


def collapsed_peak(
    path: Path, sys_path: Callable[[int], Sequence[str]] | None = None
) -> CollapsedPeak:
    """Read the high-water mark of ``path`` (one pass, threads merged), each stack's frames
    labelled by :func:`~profiler.memory.stacks.frame_label`, files shortened by
    ``sys_path(pid)`` (the worker's ``sys.path``, longest first, for the capture's pid).
    ``InputError`` (exit 7) when the file is not a capture; memray's own exceptions on a
    capture cut short are left to the caller."""
    reader = open_reader(path)
    with reader:
        pid = int(reader.metadata.pid)
        prefixes = sys_path(pid) if sys_path is not None else ()
        stacks: dict[str, list[int]] = {}
        labels: dict[tuple[str, str, int], str] = {}
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            frames = record.stack_trace()  # innermost first
            key = ";".join(frame_label(frame, labels, prefixes) for frame in reversed(frames))
            entry = stacks.setdefault(key, [0, 0])
            entry[0] += int(record.size)
            entry[1] += int(record.n_allocations)
        peak = int(reader.metadata.peak_memory)
    return CollapsedPeak(pid, peak, stacks)


def read_capture(path: Path) -> CaptureSummary:
    """Read one memray capture; ``InputError`` (exit 7) when it is missing or unreadable.

    A capture memray never closed (the worker was killed, or is still tracked) or
    cut short is read as far as it goes, with ``complete=False`` and a warning;
    only a capture with nothing readable is an error.
    """
    from memray import FileFormat

    with _memray_log() as log:
        reader = open_reader(path)
        try:
            with reader:
                metadata = reader.metadata
                aggregated = metadata.file_format == FileFormat.AGGREGATED_ALLOCATIONS
                peak_stacks = _peak_stacks(reader)
                totals = None if aggregated else _total_stacks(reader)
                last_snapshot_ms = max(
                    (snapshot.time for snapshot in reader.get_memory_snapshots()), default=None
                )
        except Exception as exc:
            raise InputError(
                f"{path}: memray cannot read its allocation records ({_reason(exc)})",
                hint=CAPTURE_HINT,
            ) from exc

    # memray rewrites the header (end time, counts) and compresses the file when it
    # closes a capture; an uncompressed header still saying end == start was never closed.
    # "==" within a slack: the first header's two times are separate clock reads, 0-1 ms
    # apart on an idle host (25 SIGKILLed captures) but more than 5 ms apart in one CI
    # run with five tracked processes starting at once on 2 cores. That header is never
    # rewritten until close, so a wide slack cannot make a killed capture look closed;
    # its only cost is a spurious "never closed" on an uncompressed capture closed
    # within 250 ms (memray compresses on close by default: the lz4 frame check).
    frame = lz4_frame_state(path)
    closed = frame is not None or metadata.end_time - metadata.start_time > NEVER_CLOSED_SLACK
    errors = sorted({line for line in log if "ERROR" in line or "CRITICAL" in line})
    warnings = [line for line in dict.fromkeys(log) if line not in errors and line.strip()]
    if not closed:
        warnings.append(
            "memray never closed this capture (the worker was killed, or is still being "
            "tracked): read up to where it ends, so the peak and totals cover only that part"
        )
    if frame == "truncated" or errors:
        why = f" (memray: {errors[0].removeprefix('Memray ERROR: ')})" if errors else ""
        warnings.append(
            f"the capture is cut short{why}: what could be read is reported, "
            "so the peak and totals cover only that part"
        )
    truncated = frame == "truncated" or bool(errors)
    complete = closed and not truncated
    if not complete and not peak_stacks and not totals:
        raise InputError(
            f"{path} holds no allocation records: tracking was stopped right after it "
            "started, or the file is cut short",
            hint=CAPTURE_HINT,
        )

    end_time: datetime | None = metadata.end_time
    if not closed:
        end_time = (
            datetime.fromtimestamp(last_snapshot_ms / 1000, tz=timezone.utc)
            if last_snapshot_ms
            else None
        )
    duration = (end_time - metadata.start_time).total_seconds() if end_time else None
    total_allocations = sum(s.allocations for s in totals) if totals is not None else None
    total_bytes = sum(s.bytes for s in totals) if totals is not None else None
    return CaptureSummary(
        path=path,
        pid=metadata.pid,
        command_line=metadata.command_line,
        python_allocator=metadata.python_allocator,
        native_traces=metadata.has_native_traces,
        trace_python_allocators=metadata.trace_python_allocators,
        aggregated=aggregated,
        start_time=metadata.start_time,
        end_time=end_time,
        duration_seconds=max(duration, 0.0) if duration is not None else None,
        peak_memory_bytes=metadata.peak_memory,
        total_allocations=total_allocations,
        total_allocated_bytes=total_bytes,
        complete=complete,
        warnings=tuple(warnings),
        by_peak=sites(peak_stacks),
        by_total=None if totals is None else sites(totals),
        peak_stacks=peak_stacks,
    )


def _peak_stacks(reader: FileReader) -> tuple[StackUsage, ...]:
    """Bytes live at the high-water mark per Python stack, threads merged, biggest first."""
    by_stack: dict[Stack, list[int]] = {}
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        # Records differing only by native stack share a Python stack: fold them.
        frames = tuple(Frame(*frame) for frame in record.stack_trace())
        entry = by_stack.setdefault(frames, [0, 0])
        entry[0] += record.size
        entry[1] += record.n_allocations
    return stack_usages(by_stack)


def _total_stacks(reader: FileReader) -> tuple[StackUsage, ...]:
    """Bytes and allocations per Python stack over the whole capture, frees excluded.

    One streamed pass: per record only integers are summed, keyed by memray's stack
    id; each distinct stack is resolved to frames once, from the first record seen.
    """
    from memray import AllocationRecord, AllocatorType

    frees = {int(AllocatorType.FREE), int(AllocatorType.PYMALLOC_FREE), int(AllocatorType.MUNMAP)}
    sums: dict[int, list[int]] = {}
    first: dict[int, AllocationRecord] = {}
    for record in reader.get_allocation_records():
        if record.allocator in frees:
            continue
        stack_id = record.stack_id
        entry = sums.get(stack_id)
        if entry is None:
            sums[stack_id] = [record.size, 1]
            first[stack_id] = record
        else:
            entry[0] += record.size
            entry[1] += 1
    by_stack: dict[Stack, list[int]] = {}
    for stack_id, (size, count) in sums.items():
        frames = tuple(Frame(*frame) for frame in first[stack_id].stack_trace())
        entry = by_stack.setdefault(frames, [0, 0])
        entry[0] += size
        entry[1] += count
    return stack_usages(by_stack)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@contextlib.contextmanager
def _memray_log() -> Iterator[list[str]]:
    """Collect what memray's C++ reader logs on stderr (file descriptor 2) meanwhile.

    memray says "Failed to process allocation record" there, not in an exception,
    when a capture ends mid-record; the lines are turned into one warning instead
    of reaching the terminal raw.
    """
    lines: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to borrow: memray's lines go nowhere anyway
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())
