"""``profiler mem``: memray on every worker at once, and reports from its captures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from profiler.cli import console
from profiler.cli.mem_report import report
from profiler.cli.options import (
    JSON_OPTION,
    duration_option,
    target_options,
)

if TYPE_CHECKING:
    from profiler.targets.discovery import TargetSpec

app = typer.Typer(
    help="Memory: memray on every worker at once, and reports from its captures.\n\n"
    "Example: profiler mem attach --pid 4242 -d 30 -o captures/",
    no_args_is_help=True,
)
app.command("report")(report)


@app.command()
@target_options
def attach(
    target: TargetSpec,
    duration: float | None = duration_option(
        "Seconds to track; without it, until Ctrl-C (memray stops by itself after 1 h).",
        minimum=1.0,
    ),
    # memray's flags, typer declarations alike in shape to mem report's: each its own help
    aggregate: bool = typer.Option(
        False,
        "--aggregate",
        help="Small capture of aggregated stats; lost if the worker is killed (OOM) mid-capture.",
    ),
    native: bool = typer.Option(False, "--native", help="Record native (C/C++) frames too."),
    trace_python_allocators: bool = typer.Option(
        False,
        "--trace-python-allocators",
        help="Record pymalloc allocations one by one (needed for leak reports; bigger capture).",
    ),
    lend_memray: bool = typer.Option(
        False,
        "--lend-memray",
        help="Worker's environment has no memray (same Python): lend it ours for this capture, "
        "installing nothing.",
    ),
    rss_interval: float = typer.Option(
        0.5, "--rss-interval", min=0.05, help="Seconds between RSS samples of each worker."
    ),
    output: Path = typer.Option(
        Path("."), "-o", "--output", help="Directory for captures (the workers write them)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite files of the same name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Attach memray to every worker at once; one capture per worker, plus an RSS timeline.

    Every worker is checked first (memray importable by its own interpreter, same
    memray version, debugger, ptrace); nothing is injected into one that fails.

    Example: profiler mem attach --pid 4242 -d 60 -o captures/
    """
    from profiler.cli.mem_attach import run_attach
    from profiler.memory.attach import MemOptions

    run_attach(
        target,
        duration,
        MemOptions(aggregate, native, trace_python_allocators),
        rss_interval,
        output,
        lend=lend_memray,
        force=force,
        as_json=as_json,
    )


@app.command()
def live(
    pid: int = typer.Option(..., "--pid", help="The worker to watch.", show_default=False),
) -> None:
    """memray's live view of one worker's allocations (checked first). q quits.

    Example: profiler mem live --pid 4242
    """
    import contextlib
    import subprocess
    import sys

    from profiler.errors import UsageError
    from profiler.memory import preflight

    if not sys.stdout.isatty():
        raise UsageError(
            "mem live draws on a terminal and stdout is not one",
            hint="in scripts use `profiler mem attach -d S`",
        )
    ready = preflight.check(pid)
    argv = [sys.executable, "-m", "memray", "attach", "--method", ready.debugger.name, str(pid)]
    console.detail(" ".join(argv))
    with contextlib.suppress(KeyboardInterrupt):  # q or Ctrl-C both end memray's view
        subprocess.run(argv, check=False)
