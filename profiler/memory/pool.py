"""A pool of workers' captures summed: per site, with each worker's share.

One worker's capture says little about a pool of identical workers: the same
line allocates in each. ``combine`` sums the captures (one per worker, read by
:func:`profiler.memory.reader.read_capture`) per site, without any I/O, and
keeps each worker's share so an outlier worker still shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.memory.reader import CaptureSummary
from profiler.memory.stacks import Frame, Site, Stack


@dataclass(frozen=True, slots=True)
class WorkerBytes:
    """One worker's share of something: its capture, its PID and the bytes."""

    path: Path
    pid: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "pid": self.pid, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class PoolSite:
    """A site summed over the workers of a pool, with each worker's share."""

    frame: Frame
    bytes: int
    allocations: int
    stack: Stack
    workers: tuple[WorkerBytes, ...]
    """The workers where the site appears, biggest first."""

    def to_json(self) -> dict[str, Any]:
        return {
            **self.frame.to_json(),
            "bytes": self.bytes,
            "allocations": self.allocations,
            "stack": [frame.to_json() for frame in self.stack],
            "workers": [worker.to_json() for worker in self.workers],
        }


@dataclass(frozen=True, slots=True)
class PoolSummary:
    """Several captures, one per worker of a pool, summed."""

    workers: tuple[CaptureSummary, ...]
    peak_memory_bytes: int
    """The sum of the workers' peaks: an upper bound, since workers peak at different times."""
    total_allocated_bytes: int | None
    """Summed over the captures that have totals (not aggregated); None when none has."""
    by_peak: tuple[PoolSite, ...]
    by_total: tuple[PoolSite, ...] | None

    def to_json(self, top: int = 10) -> dict[str, Any]:
        """The ``combined`` object of ``profiler mem report --json``."""
        return {
            "workers": [
                {
                    "path": str(worker.path),
                    "pid": worker.pid,
                    "peak_memory_bytes": worker.peak_memory_bytes,
                    "total_allocated_bytes": worker.total_allocated_bytes,
                }
                for worker in self.workers
            ],
            "peak_memory_bytes": self.peak_memory_bytes,
            "total_allocated_bytes": self.total_allocated_bytes,
            "top_by_peak": [site.to_json() for site in self.by_peak[:top]],
            "top_by_total": None
            if self.by_total is None
            else [site.to_json() for site in self.by_total[:top]],
        }


def combine(captures: Sequence[CaptureSummary]) -> PoolSummary:
    """Sum the captures of a pool's workers: per site, and each worker's share.

    Sites are matched on (function, file, line), which the workers of one pool
    share. Totals come from the captures that have them (aggregated ones do not).
    """
    with_totals = [capture for capture in captures if capture.by_total is not None]
    return PoolSummary(
        workers=tuple(captures),
        peak_memory_bytes=sum(capture.peak_memory_bytes for capture in captures),
        total_allocated_bytes=sum(c.total_allocated_bytes or 0 for c in with_totals)
        if with_totals
        else None,
        by_peak=_pool_sites([(capture, capture.by_peak) for capture in captures]),
        by_total=_pool_sites([(c, c.by_total or ()) for c in with_totals]) if with_totals else None,
    )


def _pool_sites(per_worker: list[tuple[CaptureSummary, tuple[Site, ...]]]) -> tuple[PoolSite, ...]:
    shares: dict[Frame, list[tuple[CaptureSummary, Site]]] = {}
    for capture, worker_sites in per_worker:
        for site in worker_sites:
            shares.setdefault(site.frame, []).append((capture, site))
    result = []
    for frame, found in shares.items():
        found.sort(key=lambda item: (-item[1].bytes, str(item[0].path)))
        result.append(
            PoolSite(
                frame=frame,
                bytes=sum(site.bytes for _, site in found),
                allocations=sum(site.allocations for _, site in found),
                stack=found[0][1].stack,
                workers=tuple(WorkerBytes(c.path, c.pid, site.bytes) for c, site in found),
            )
        )
    return tuple(sorted(result, key=lambda s: (-s.bytes, s.frame.file, s.frame.line)))
