"""``profiler cpu``: py-spy on every worker at once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from profiler import units
from profiler.cli import console
from profiler.cli.options import (
    JSON_OPTION,
    duration_option,
    target_options,
)
from profiler.cli.signals import Terminated, terminate_as_exception
from profiler.outputs import prepare_directory, refuse_to_clobber

if TYPE_CHECKING:
    from profiler.capture.record import Recording, WorkerPlan, WorkerRecording
    from profiler.capture.stacks import StackSample
    from profiler.targets.discovery import TargetSpec

app = typer.Typer(
    help="CPU and stacks: py-spy on every worker at once.\n\n"
    "Example: profiler cpu record --pid 4242 -d 30 -o profiles/",
    no_args_is_help=True,
)

SHOWN_FRAMES = 12

# py-spy's sampling options, shared by `record` and `top`, which both list all six: typer
# reads each command's own signature, so those parameter lines repeat on purpose.
RATE_OPTION = typer.Option(100, "--rate", min=1, max=1000, help="Samples per second per worker.")
IDLE_OPTION = typer.Option(False, "--idle", help="Include threads that are waiting, not running.")
GIL_OPTION = typer.Option(False, "--gil", help="Only samples of threads holding the GIL.")
NATIVE_OPTION = typer.Option(False, "--native", help="Include native (C) frames.")
NONBLOCKING_OPTION = typer.Option(
    False, "--nonblocking", help="Never pause the workers (samples may be slightly torn)."
)
MAX_PAUSE_OPTION = typer.Option(
    1.0,
    "--max-pause",
    min=0.0,
    max=100.0,
    help="Blocking mode: lower a worker's rate so sampling stops it at most this % of the "
    "time (0 turns the guard off).",
)


@app.command()
@target_options
def dump(
    target: TargetSpec,
    as_json: bool = JSON_OPTION,
    show_locals: bool = typer.Option(
        False, "--locals", help="Include local variables (may show secrets: use with care)."
    ),
    native: bool = NATIVE_OPTION,
    nonblocking: bool = NONBLOCKING_OPTION,
    interval: float | None = typer.Option(
        None,
        "--interval",
        min=0.05,
        help="Dump again every S seconds, writing timestamped samples to -o FILE (JSON Lines).",
        show_default=False,
    ),
    duration: float | None = duration_option(
        "With --interval: seconds to keep dumping; without it, until Ctrl-C."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="With --interval: the stack sample log to write."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite -o FILE if it exists."),
) -> None:
    """The stacks of every thread of every worker right now, identical stacks counted once;
    with --interval, timestamped samples every S seconds, to line up with PostgreSQL.

    Example: profiler cpu dump --pid 4242 (add --interval 0.5 -d 60 -o stacks.jsonl to log)
    """
    import shlex

    from profiler.capture.stacks import dump_command, dump_workers, fold
    from profiler.errors import AttachError, UsageError
    from profiler.targets.discovery import attach_pids

    if interval is None and (duration is not None or output is not None):
        raise UsageError("-d and -o go with --interval", hint="add --interval S to dump repeatedly")
    if interval is not None and output is None:
        raise UsageError("--interval needs -o FILE", hint="e.g. --interval 0.5 -o stacks.jsonl")
    if interval is not None and show_locals:
        raise UsageError(
            "--locals is for one dump, not a log", hint="locals may hold secrets; drop --locals"
        )
    targets = attach_pids(target, console.warn)
    if not targets:
        raise AttachError(
            "no workers to dump", hint="name them with --pid or --match (see: profiler workers)"
        )
    if interval is not None:
        assert output is not None
        _dump_periodically(targets, interval, duration, output, force, native, nonblocking)
        return
    options: dict[str, Any] = {"native": native, "locals_": show_locals, "nonblocking": nonblocking}
    for worker_pid in targets:
        console.detail(shlex.join(dump_command(worker_pid, **options)))
    samples, failures = dump_workers(targets, **options)
    for failed_pid, error in sorted(failures.items()):
        console.warn(f"worker {failed_pid}: {error.message}")
    if not samples:
        first = next(iter(failures.values()))
        raise type(first)(first.message, hint=first.hint)
    if as_json:
        console.print_json(_dump_json(samples, fold(samples)))
        return
    for stack, count, pids in fold(samples):
        frames = stack.split(";")[::-1]  # innermost first: where the threads are now
        where = ", ".join(map(str, pids))
        console.out.print(f"[bold]{count} thread{'s' * (count != 1)}[/bold] in worker {where}:")
        for frame in frames[:SHOWN_FRAMES]:
            console.out.print(f"    {frame}", markup=False)
        if len(frames) > SHOWN_FRAMES:
            console.out.print(f"    ... {len(frames) - SHOWN_FRAMES} more frames")


def _dump_periodically(
    targets: list[int],
    interval: float,
    duration: float | None,
    output: Path,
    force: bool,
    native: bool,
    nonblocking: bool,
) -> None:
    """Append every round to ``output`` as it comes; stopping early keeps every line written."""
    import threading
    from datetime import datetime, timezone

    from profiler.capture.stack_log import StackLogWriter
    from profiler.capture.stacks import DumpFailure, periodic_dumps
    from profiler.errors import AttachError, InterruptedCapture

    header = {
        "interval": interval,
        "pids": targets,
        "native": native,
        "nonblocking": nonblocking,
        "started_at": datetime.now(timezone.utc).isoformat(),
    }
    stop = threading.Event()
    how_long = f"for {duration:g}s" if duration else "until Ctrl-C"
    console.info(f"dumping {len(targets)} worker(s) every {interval:g}s {how_long} to {output}")
    interrupted = False
    with StackLogWriter(output, header, force=force) as log, terminate_as_exception():
        try:
            for item in periodic_dumps(
                targets,
                interval=interval,
                seconds=duration,
                stop=stop,
                native=native,
                nonblocking=nonblocking,
            ):
                log.add(item)
                if isinstance(item, DumpFailure):
                    dropped = "; not dumped again" if item.dropped else ""
                    console.warn(f"worker {item.worker_pid}: {item.reason}{dropped}")
        except KeyboardInterrupt:
            interrupted = duration is not None
        except Terminated:
            interrupted = True
    console.info(f"wrote {log.samples} thread samples, {log.failures} failed dumps to {output}")
    if log.samples == 0:
        raise AttachError("no stacks were sampled", hint="see the warnings above")
    if interrupted:
        raise InterruptedCapture(
            "stack dumps interrupted", hint=f"what was sampled is kept: {output}"
        )


def _dump_json(
    samples: list[StackSample], folded: list[tuple[str, int, list[int]]]
) -> dict[str, Any]:
    from dataclasses import asdict

    by_worker: dict[int, list[dict[str, Any]]] = {}
    for sample in samples:
        thread = asdict(sample)
        thread["taken_at"] = sample.taken_at.isoformat()
        by_worker.setdefault(sample.worker_pid, []).append(thread)
    return {
        "workers": [{"pid": pid, "threads": threads} for pid, threads in sorted(by_worker.items())],
        "folded": [{"stack": stack, "count": count, "pids": pids} for stack, count, pids in folded],
    }


@app.command()
@target_options
def record(
    target: TargetSpec,
    duration: float | None = duration_option("Seconds to record; without it, record until Ctrl-C."),
    # the sampling options, as in `top` (declared once above)
    rate: int = RATE_OPTION,
    idle: bool = IDLE_OPTION,
    gil: bool = GIL_OPTION,
    native: bool = NATIVE_OPTION,
    nonblocking: bool = NONBLOCKING_OPTION,
    max_pause: float = MAX_PAUSE_OPTION,
    output: Path = typer.Option(
        Path("."), "-o", "--output", help="Directory for flamegraphs, speedscope and stacks."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite files of the same name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Record every worker with py-spy at once: flamegraph, speedscope and stacks per worker,
    plus one flamegraph merged across workers.

    Example: profiler cpu record --pid 4242 -d 30 -o profiles/
    """
    import shlex

    from profiler.capture import record as recorder
    from profiler.capture.ptrace import read_access
    from profiler.errors import AttachError, InterruptedCapture
    from profiler.session.cpu_record import ArtifactWriter, artifact_paths, describe, stamp
    from profiler.targets.discovery import attach_pids

    targets = attach_pids(target, console.warn)
    if not targets:
        raise AttachError(
            "no workers to record", hint="name them with --pid or --match (see: profiler workers)"
        )
    options = recorder.RecordOptions(rate, idle, gil, native, nonblocking, max_pause / 100)
    plans = recorder.plan(targets, options)
    _warn_about_cost(plans, gil)
    paths = artifact_paths(output, [p.pid for p in plans], stamp(time.time()))
    refuse_to_clobber(paths.all(), force=force)
    prepare_directory(output)
    cmdlines = {worker_plan.pid: describe(worker_plan.pid) for worker_plan in plans}
    collapsed_paths = {p: files.collapsed for p, files in paths.workers.items()}
    recording = recorder.start(plans, options, collapsed_paths)
    for worker in recording.workers:
        console.detail(shlex.join(worker.command))
    how_long = f"for {duration:g}s" if duration else "until Ctrl-C"
    console.info(f"recording {len(plans)} worker(s) {how_long} into {output}")
    warned: set[int] = set()
    interrupted = _wait_for_window(recording, duration, warned)
    artifacts = ArtifactWriter(recording, paths, options, cmdlines)
    recorder.stop(recording, on_done=artifacts.worker_done)
    manifest = artifacts.finish(interrupted=interrupted)

    for worker in recording.workers:
        if worker.error and worker.pid not in warned:
            console.warn(f"worker {worker.pid}: {worker.error}")
    if manifest["merged"] is None:
        failed = next((w for w in recording.workers if w.stopped == "failed"), None)
        raise AttachError(
            failed.error if failed and failed.error else "no stacks were sampled",
            hint=read_access().hint()
            if failed and "permission denied" in (failed.error or "")
            else "check the targets with `profiler doctor --pid PID`",
        )
    if as_json:
        console.print_json(manifest)
    else:
        _print_record_summary(manifest, output)
    if interrupted:
        raise InterruptedCapture(
            f"capture interrupted after {units.seconds(manifest['seconds'], 1)}",
            hint=f"what was sampled is kept: {paths.manifest}",
        )


def _warn_about_cost(plans: list[WorkerPlan], gil_only: bool) -> None:
    """Say when the plan differs from what was asked, or py-spy itself will cost a lot of CPU."""
    from profiler.capture.record import NOTABLE_PYSPY_CPU

    for worker_plan in plans:
        if worker_plan.reason:
            console.warn(f"worker {worker_plan.pid}: {worker_plan.reason}")
        cpu = worker_plan.predicted_cpu(gil_only=gil_only)
        if cpu >= NOTABLE_PYSPY_CPU:
            console.warn(
                f"worker {worker_plan.pid}: py-spy will use ~{units.percent(cpu)} of a core "
                f"({worker_plan.threads} threads at {worker_plan.rate} Hz); "
                "--gil or a lower --rate costs less"
            )


def _wait_for_window(recording: Recording, duration: float | None, warned: set[int]) -> bool:
    """Wait out the window with a countdown; True when it was cut short (Ctrl-C, SIGTERM).

    Ctrl-C with no ``-d`` is how the user says "stop", not an interruption.
    """
    from profiler.capture import record as recorder

    def tick(elapsed: float, ended: list[WorkerRecording]) -> None:
        for worker in ended:
            console.warn(f"worker {worker.pid}: {worker.error or 'py-spy stopped early'}")
            warned.add(worker.pid)
        left = (
            f"{units.seconds(duration - elapsed, 0)} left"
            if duration
            else units.seconds(elapsed, 0)
        )
        status.update(f"recording {len(recording.running)} worker(s): {left} (Ctrl-C stops)")

    try:
        with terminate_as_exception(), console.err.status("") as status:
            recorder.wait(recording, duration, tick=tick)
            return False
    except KeyboardInterrupt:
        return duration is not None
    except Terminated:
        return True


def _print_record_summary(manifest: dict[str, Any], directory: Path) -> None:
    """One row per worker; file names only (the directory is said once), so nothing truncates."""
    from profiler.report.tables import keep_whole

    table = console.listing(f"in {directory}/")
    for column in ("worker", "rate", "samples", "errors", "status", "flamegraph"):
        table.add_column(column, overflow="fold")
    rows = [*manifest["workers"], {"pid": "merged", **(manifest["merged"] or {"artifacts": None})}]
    for row in rows:
        flamegraph = (row["artifacts"] or {}).get("flamegraph")
        rate = ""
        if "rate" in row:
            rate = f"{row['rate']} Hz" + (" nonblocking" if row["nonblocking"] else "")
        table.add_row(
            str(row["pid"]),
            rate,
            str(row.get("samples", "")),
            str(row.get("errors", "")),
            row.get("status", ""),
            Path(flamegraph).name if flamegraph else "-",
        )
    keep_whole(table, "worker", "flamegraph")
    console.out.print(table)


@app.command()
def top(
    pid: int = typer.Option(..., "--pid", help="The worker to watch.", show_default=False),
    # the sampling options, as in `record` (declared once above)
    rate: int = RATE_OPTION,
    idle: bool = IDLE_OPTION,
    gil: bool = GIL_OPTION,
    native: bool = NATIVE_OPTION,
    nonblocking: bool = NONBLOCKING_OPTION,
    max_pause: float = MAX_PAUSE_OPTION,
) -> None:
    """py-spy's live top view of one worker: the functions using CPU now. Ctrl-C quits.

    Example: profiler cpu top --pid 4242
    """
    import subprocess
    import sys

    from profiler.capture import record as recorder
    from profiler.capture.stacks import dump, resolve_pyspy
    from profiler.errors import AttachError, UsageError
    from profiler.targets.discovery import TargetSpec, attach_pids

    targets = attach_pids(TargetSpec((pid,), None))
    if targets != [pid]:
        workers = ", ".join(map(str, targets)) or "none"
        raise UsageError(
            f"PID {pid} is a server master; top watches one worker (its workers: {workers})",
            hint=f"pass one of them: profiler cpu top --pid {targets[0] if targets else 'WORKER'}",
        )
    if not sys.stdout.isatty():
        raise UsageError(
            "cpu top draws on a terminal and stdout is not one",
            hint="in scripts use `profiler cpu record -d S` or `profiler cpu dump`",
        )
    pyspy = resolve_pyspy(None)
    dump(pid, pyspy=pyspy, nonblocking=True)  # no such process / not Python / ptrace: exit 3 now
    options = recorder.RecordOptions(rate, idle, gil, native, nonblocking, max_pause / 100)
    (worker,) = recorder.plan([pid], options)
    _warn_about_cost([worker], gil)
    argv = [str(pyspy), "top", "--pid", str(pid), "--rate", str(worker.rate)]
    flags = {"--idle": idle, "--gil": gil, "--native": native, "--nonblocking": worker.nonblocking}
    argv += [flag for flag, wanted in flags.items() if wanted]
    console.detail(" ".join(argv))
    try:
        returncode = subprocess.run(argv, check=False).returncode
    except KeyboardInterrupt:
        return
    if returncode not in (0, 130, -2):  # Ctrl-C ends py-spy top by design
        raise AttachError(
            f"py-spy top of PID {pid} stopped with exit code {returncode}",
            hint="the worker may have exited; see `profiler workers`",
        )
