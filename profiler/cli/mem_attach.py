"""``profiler mem attach``: check, attach in parallel, wait out the window, detach everyone.

Kept apart from ``cli/mem.py`` so ``profiler --help`` does not import psutil
and memray's machinery; this module is imported only when the command runs.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from profiler import units
from profiler.capture.writable import check_writable
from profiler.cli import console
from profiler.cli.signals import Terminated, terminate_as_exception
from profiler.errors import AttachError, InterruptedCapture
from profiler.memory import preflight
from profiler.memory.attach import (
    MemOptions,
    WorkerCapture,
    attach_all,
    detach_all,
    plan_captures,
)
from profiler.memory.rss import RssSampler
from profiler.outputs import prepare_directory, refuse_to_clobber
from profiler.session.cpu_record import stamp
from profiler.targets.discovery import TargetSpec, attach_pids


def run_attach(
    spec: TargetSpec,
    duration: float | None,
    options: MemOptions,
    rss_interval: float,
    output: Path,
    *,
    lend: bool,
    force: bool,
    as_json: bool,
) -> None:
    started = time.time()
    ready = _ready_workers(spec, lend=lend)
    directory = prepare_directory(output).resolve()  # the worker has its own cwd
    when = stamp(started)
    captures = plan_captures(ready, directory, options, duration, stamp=when)
    rss_path = directory / f"rss-{when}.jsonl"
    manifest_path = directory / f"mem-attach-{when}.json"
    paths = [*(c.capture for c in captures), rss_path, manifest_path]
    for path in refuse_to_clobber(paths, force=force):
        path.unlink()  # memray refuses to write over a file
    check_writable(directory, [c.pid for c in captures])

    interrupted = False
    warned: set[int] = set()
    with RssSampler(rss_path, [c.pid for c in captures], rss_interval) as rss:
        try:
            with terminate_as_exception():
                console.info(f"attaching memray to {len(captures)} worker(s) in parallel")
                for capture in captures:
                    console.detail(" ".join(capture.command))
                attach_all(captures)
                _report_attach(captures, started)
                if any(c.status == "tracking" for c in captures):
                    interrupted = _wait(captures, duration, rss.exited, warned)
        except KeyboardInterrupt:
            interrupted = duration is not None  # without -d, Ctrl-C is how one stops
        except Terminated:
            interrupted = True
        finally:
            console.info("detaching memray from every worker")
            detach_all(captures)
    manifest = _manifest(captures, options, started, rss, rss_path, interrupted, duration)
    for capture in captures:
        if capture.status == "exited" and capture.pid not in warned:
            console.warn(f"worker {capture.pid} exited during the capture; its capture is kept")
    manifest_path.write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")

    if as_json:
        console.print_json(manifest)
    else:
        _print_summary(manifest, directory)
    if not any(c.status in ("done", "exited") for c in captures):
        first_failure = next(c for c in captures if c.status == "failed")
        raise AttachError(
            first_failure.error or "memray could not attach",
            hint="run `profiler doctor --pid PID`; memray attach -v shows the debugger's output",
        )
    if interrupted:
        raise InterruptedCapture(
            f"capture interrupted after {units.seconds(manifest['seconds'], 1)}; "
            "every worker was detached",
            hint=f"what was captured is kept: {manifest_path}",
        )


def _ready_workers(spec: TargetSpec, *, lend: bool) -> list[preflight.Ready]:
    """Workers that passed every check; the others are warnings, all failing is the error."""
    targets = attach_pids(spec)
    if not targets:
        raise AttachError(
            "no workers to attach to",
            hint="name them with --pid or --match (see: profiler workers)",
        )
    ready, failed = preflight.check_all(targets, lend=lend)
    errors = [error for _, error in sorted(failed.items())]
    if not ready:  # the first is the error; any others are warnings before it
        errors = errors[1:] + errors[:1]
    for error in errors[: len(errors) - (not ready)]:
        hint = f" ({error.hint})" if error.hint else ""
        console.warn(f"{error.message}{hint}")
    if not ready:
        raise type(errors[-1])(errors[-1].message, hint=errors[-1].hint)
    return ready


def _report_attach(captures: list[WorkerCapture], started: float) -> None:
    for capture in captures:
        if capture.status == "failed":
            console.warn(f"worker {capture.pid}: {capture.error}")
        elif capture.route is not None:
            console.warn(f"worker {capture.pid}: {capture.route}")
        if capture.status != "failed" and capture.tracking_since is not None:
            since = units.seconds(capture.tracking_since - started, 1)
            took = (
                "-" if capture.attach_seconds is None else units.seconds(capture.attach_seconds, 1)
            )
            console.detail(
                f"worker {capture.pid}: tracking {since} after the command started "
                f"(attach took {took})"
            )


def _wait(
    captures: list[WorkerCapture], duration: float | None, exited: set[int], warned: set[int]
) -> bool:
    """Until ``duration`` after the last attach, or Ctrl-C. True when cut short."""
    window_start = time.monotonic()
    with console.err.status("") as status:
        while True:
            elapsed = time.monotonic() - window_start
            if duration is not None and elapsed >= duration:
                return False
            for capture in captures:
                if capture.pid in exited and capture.pid not in warned:
                    warned.add(capture.pid)
                    console.warn(
                        f"worker {capture.pid} exited during the capture; its capture is kept"
                    )
            tracking = [c for c in captures if c.status == "tracking" and c.pid not in exited]
            if not tracking:
                return False
            left = (
                f"{units.seconds(duration - elapsed, 0)} left"
                if duration
                else units.seconds(elapsed, 0)
            )
            status.update(f"memray tracking {len(tracking)} worker(s): {left} (Ctrl-C stops)")
            time.sleep(0.1)


def _manifest(
    captures: list[WorkerCapture],
    options: MemOptions,
    started: float,
    rss: RssSampler,
    rss_path: Path,
    interrupted: bool,
    duration: float | None,
) -> dict[str, Any]:
    ended = time.time()
    for capture in captures:
        if capture.pid in rss.exited and capture.status in ("tracking", "done"):
            capture.status = "exited"
            capture.error = "worker exited during the capture; its capture is kept"
    active = [c.tracking_since - started for c in captures if c.tracking_since is not None]
    return {
        "kind": "mem-attach",
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "seconds": round(ended - started, 3),
        "duration": duration,
        "interrupted": interrupted,
        "options": {
            "aggregate": options.aggregate,
            "native": options.native,
            "trace_python_allocators": options.trace_python_allocators,
        },
        "all_tracking_after_seconds": round(max(active), 3) if active else None,
        "rss_timeline": str(rss_path),
        "workers": [
            {
                "pid": c.pid,
                "status": c.status,
                "error": c.error,
                "capture": str(c.capture) if c.capture.exists() else None,
                "capture_bytes": c.capture.stat().st_size if c.capture.exists() else None,
                "python_version": c.ready.python_version,
                "memray_version": c.ready.memray_version,
                "memray_lent": c.ready.lent,
                "tracking_since": None if c.tracking_since is None else _iso(c.tracking_since),
                "attach_seconds": None if c.attach_seconds is None else round(c.attach_seconds, 3),
                "rss_first_bytes": rss.first.get(c.pid),
                "rss_last_bytes": rss.last.get(c.pid),
                "rss_peak_bytes": rss.peaks.get(c.pid),
                "command": c.command,
            }
            for c in captures
        ],
    }


def _print_summary(manifest: dict[str, Any], directory: Path) -> None:
    from profiler.report.tables import keep_whole

    table = console.listing(f"in {directory}/")
    for column in ("worker", "status", "RSS first", "RSS peak", "capture", "size"):
        table.add_column(column, overflow="fold")
    for worker in manifest["workers"]:
        table.add_row(
            str(worker["pid"]),
            worker["status"],
            units.measure(worker["rss_first_bytes"], "bytes"),
            units.measure(worker["rss_peak_bytes"], "bytes"),
            Path(worker["capture"]).name if worker["capture"] else "-",
            units.measure(worker["capture_bytes"], "bytes"),
        )
    keep_whole(table, "worker", "capture")
    console.out.print(table)
    captures = [w["capture"] for w in manifest["workers"] if w["capture"]]
    if captures:
        console.info("next: profiler mem report " + " ".join(captures))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat()
