"""The recorder's disk budget: ``--max-disk`` for the folder, oldest incidents go first.

The budget covers everything under the output folder. Before an incident
starts there must be room for a typical one (the mean of those kept, at
least :data:`MIN_INCIDENT_BYTES`) and the file system must keep
:data:`FREE_RESERVE_FRACTION` of itself free, whatever the budget says; a
running incident is cut short when the folder goes over budget. After an
incident, the oldest complete incidents are deleted until the folder fits. An
incident still being written (its manifest says ``recording``, from a live
recorder) is never deleted; one left ``recording`` by a killed recorder is
complete as far as anyone will ever write it, and goes in its turn.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from profiler import units
from profiler.watch.incident import PREFIX

MIN_INCIDENT_BYTES = 4 * units.MIB
FREE_RESERVE_FRACTION = 0.05


@dataclass(frozen=True, slots=True)
class Usage:
    total_bytes: int
    incidents: list[tuple[Path, int]]  # oldest first, with their sizes


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # deleted while we walked
    return total


def usage(root: Path) -> Usage:
    incidents = sorted(p for p in root.glob(f"{PREFIX}*") if p.is_dir())
    sizes = [(p, folder_bytes(p)) for p in incidents]
    others = sum(
        folder_bytes(p) if p.is_dir() else _size(p)
        for p in root.iterdir()
        if not p.name.startswith(PREFIX)
    )
    return Usage(others + sum(size for _, size in sizes), sizes)


def room_for_one(root: Path, budget: int) -> str | None:
    """Why no incident may start now, or None when one may. Call it after :func:`enforce`:
    what is left then are incidents still being written."""
    used = usage(root)
    sizes = [size for _, size in used.incidents]
    typical = max(MIN_INCIDENT_BYTES, sum(sizes) // len(sizes) if sizes else 0)
    if used.total_bytes + typical > budget:
        return (
            f"the --max-disk budget ({budget} bytes) has no room for an incident "
            f"({used.total_bytes} bytes used, {typical} bytes needed)"
        )
    disk = shutil.disk_usage(root)
    if disk.free - typical < FREE_RESERVE_FRACTION * disk.total:
        return f"the file system of {root} is {units.percent(disk.used / disk.total)} full"
    return None


def enforce(root: Path, budget: int, *, keep: set[Path], reserve: int = 0) -> list[Path]:
    """Delete the oldest incidents (never those in ``keep``) until the folder plus
    ``reserve`` bytes fits ``budget``; the folders deleted."""
    used = usage(root)
    total = used.total_bytes
    deleted: list[Path] = []
    for path, size in used.incidents:
        if total + reserve <= budget:
            break
        if path in keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total -= size
        deleted.append(path)
    return deleted


def over_budget(root: Path, budget: int) -> bool:
    return folder_bytes(root) > budget


def incident_state(path: Path) -> str | None:
    """``recording`` or ``complete`` from an incident's manifest; None if unreadable."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    incident = manifest.get("incident") if isinstance(manifest, dict) else None
    return incident.get("state") if isinstance(incident, dict) else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
