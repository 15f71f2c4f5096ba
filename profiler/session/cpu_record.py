"""What ``cpu record`` leaves on disk: per-worker and merged flamegraphs, and a manifest.

Names are ``<kind>-<pid>-<UTC stamp>.<ext>`` (``merged`` in place of the PID
for the across-workers files), so captures of several runs share a directory
without clobbering each other and sort by time. The manifest
(``cpu-record-<stamp>.json``) carries what py-spy's own formats cannot: the
wall-clock window, the rate each worker was really sampled at and why, and
what happened to every worker.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from profiler import units
from profiler.analysis import collapsed
from profiler.capture.record import Recording, RecordOptions, WorkerRecording
from profiler.render.flamegraph import render_svg
from profiler.render.speedscope import speedscope_document, write_speedscope

MERGED = "merged"


def stamp(at: float) -> str:
    """``20261122T073600Z``: sortable, filesystem-safe, unambiguous (UTC)."""
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True, slots=True)
class WorkerFiles:
    collapsed: Path
    flamegraph: Path
    speedscope: Path


@dataclass(frozen=True, slots=True)
class ArtifactPaths:
    """Every file one capture may write, known before it starts (to refuse overwrites)."""

    workers: dict[int, WorkerFiles]
    merged: WorkerFiles
    manifest: Path

    def all(self) -> list[Path]:
        files = [*self.workers.values(), self.merged]
        paths = [path for group in files for path in (group.collapsed, group.flamegraph)]
        paths += [group.speedscope for group in files]
        return [*paths, self.manifest]


def artifact_paths(directory: Path, pids: list[int], when: str) -> ArtifactPaths:
    def files(key: str) -> WorkerFiles:
        return WorkerFiles(
            collapsed=directory / f"collapsed-{key}-{when}.txt",
            flamegraph=directory / f"flamegraph-{key}-{when}.svg",
            speedscope=directory / f"speedscope-{key}-{when}.json",
        )

    return ArtifactPaths(
        workers={pid: files(str(pid)) for pid in pids},
        merged=files(MERGED),
        manifest=directory / f"cpu-record-{when}.json",
    )


def describe(pid: int) -> str:
    """The worker's command line for titles; empty when it is gone or hidden."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


class ArtifactWriter:
    """Renders each worker the moment its py-spy is done, then the merged files and manifest.

    Pass :meth:`worker_done` as ``on_done`` to :func:`profiler.capture.record.stop`:
    the first flamegraph is then on disk as soon as the quickest py-spy has
    written its stacks, not after the slowest (``first_flamegraph_seconds`` in
    the manifest measures it from the end of the window).
    """

    def __init__(
        self,
        recording: Recording,
        paths: ArtifactPaths,
        options: RecordOptions,
        cmdlines: dict[int, str],
    ) -> None:
        self.recording = recording
        self.paths = paths
        self.options = options
        self.cmdlines = cmdlines
        self.stacks: dict[int, Counter[str]] = {}
        self.dropped: dict[int, int] = {}  # torn fragments in py-spy's output, per worker
        self.first_flamegraph: float | None = None

    def worker_done(self, worker: WorkerRecording) -> None:
        if not worker.has_stacks or worker.pid in self.stacks:
            return
        files = self.paths.workers[worker.pid]
        stacks, self.dropped[worker.pid] = collapsed.read_lenient(worker.collapsed)
        self.stacks[worker.pid] = stacks
        collapsed.write(files.collapsed, stacks)  # heaviest first
        window = self._window()
        title = f"CPU: worker {worker.pid}"
        subtitle = (
            f"{_sampling(worker, self.options)}; {window}; {self.cmdlines.get(worker.pid, '')}"
        )
        files.flamegraph.write_text(render_svg(stacks, title=title, subtitle=subtitle))
        if self.first_flamegraph is None:
            self.first_flamegraph = max(0.0, time.time() - self._ended())
        document = speedscope_document(
            [(f"worker {worker.pid}", stacks)],
            name=f"worker {worker.pid} {window}",
            rate_hz=worker.plan.rate,
        )
        write_speedscope(files.speedscope, document)

    def finish(self, *, interrupted: bool) -> dict[str, Any]:
        """Any worker not rendered yet, the merged files, then the manifest; returns it."""
        for worker in self.recording.workers:
            self.worker_done(worker)
        return _manifest(self, interrupted)

    def _ended(self) -> float:
        return self.recording.ended_at or time.time()

    def _window(self) -> str:
        return _window(self.recording.started_at, self._ended())


def write_artifacts(
    recording: Recording,
    paths: ArtifactPaths,
    options: RecordOptions,
    cmdlines: dict[int, str],
    *,
    interrupted: bool,
) -> dict[str, Any]:
    """Everything at once, for a recording already stopped (benchmarks, notebooks)."""
    return ArtifactWriter(recording, paths, options, cmdlines).finish(interrupted=interrupted)


def _manifest(writer: ArtifactWriter, interrupted: bool) -> dict[str, Any]:
    recording, paths, options = writer.recording, writer.paths, writer.options
    per_worker = writer.stacks
    ended = writer._ended()
    window = writer._window()
    first_flamegraph = writer.first_flamegraph
    entries = []
    for worker in recording.workers:
        entry = _worker_entry(worker, writer.cmdlines.get(worker.pid, ""), options)
        if worker.pid in per_worker:
            entry["artifacts"] = _files_json(paths.workers[worker.pid])
        # py-spy's own count and what its output holds can differ by a torn sample or
        # one taken as it was stopped; the merged total adds up these, not py-spy's.
        entry["flamegraph_samples"] = collapsed.total(per_worker.get(worker.pid, {}))
        entry["dropped_fragments"] = writer.dropped.get(worker.pid, 0)
        entries.append(entry)

    merged_entry: dict[str, Any] | None = None
    if per_worker:
        merged = collapsed.merge(per_worker.values())
        collapsed.write(paths.merged.collapsed, merged)
        rates = sorted({worker.plan.rate for worker in recording.workers})
        paths.merged.flamegraph.write_text(
            render_svg(
                merged,
                title=f"CPU: {len(per_worker)} workers merged",
                subtitle=f"workers {', '.join(map(str, per_worker))}; {window}",
            )
        )
        profiles = [(f"worker {pid}", stacks) for pid, stacks in per_worker.items()]
        rate = rates[0] if len(rates) == 1 else None  # mixed rates: samples, not seconds
        write_speedscope(
            paths.merged.speedscope,
            speedscope_document(profiles, name=f"{len(per_worker)} workers {window}", rate_hz=rate),
        )
        merged_entry = {"samples": collapsed.total(merged), "artifacts": _files_json(paths.merged)}

    manifest = {
        "kind": "cpu-record",
        "started_at": _iso(recording.started_at),
        "ended_at": _iso(ended),
        "seconds": round(ended - recording.started_at, 3),
        "interrupted": interrupted,
        "options": {
            "rate": options.rate,
            "idle": options.idle,
            "gil": options.gil,
            "native": options.native,
            "nonblocking": options.nonblocking,
            "max_pause": options.max_pause,
        },
        "workers": entries,
        "merged": merged_entry,
        "first_flamegraph_seconds": (
            None if first_flamegraph is None else round(first_flamegraph, 3)
        ),
    }
    paths.manifest.write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    return manifest


def _worker_entry(worker: WorkerRecording, cmdline: str, options: RecordOptions) -> dict[str, Any]:
    return {
        "pid": worker.pid,
        "cmdline": cmdline,
        "threads": worker.plan.threads,
        "rate": worker.plan.rate,
        "requested_rate": worker.plan.requested_rate,
        "nonblocking": worker.plan.nonblocking,
        "predicted_pause": round(worker.plan.predicted_pause, 5),
        "predicted_pyspy_cpu": round(worker.plan.predicted_cpu(gil_only=options.gil), 4),
        "rate_reason": worker.plan.reason,
        "status": worker.stopped,
        "error": worker.error,
        "samples": worker.samples,
        "errors": worker.errors,
        "seconds": None if worker.ended_after is None else round(worker.ended_after, 3),
        "command": worker.command,
        "artifacts": None,
    }


def _files_json(files: WorkerFiles) -> dict[str, str]:
    return {
        "collapsed": str(files.collapsed),
        "flamegraph": str(files.flamegraph),
        "speedscope": str(files.speedscope),
    }


def _sampling(worker: WorkerRecording, options: RecordOptions) -> str:
    modes = [f"{worker.samples} samples at {worker.plan.rate} Hz"]
    modes.append("nonblocking" if worker.plan.nonblocking else "blocking")
    modes += [name for name, on in (("idle", options.idle), ("gil only", options.gil)) if on]
    return ", ".join(modes)


def _window(start: float, end: float) -> str:
    begin = datetime.fromtimestamp(start, timezone.utc)
    return f"{begin:%Y-%m-%d %H:%M:%S} UTC + {units.seconds(end - start, 1)}"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat()
