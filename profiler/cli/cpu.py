"""``profiler cpu``: py-spy on every worker at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from profiler.cli import console
from profiler.cli.options import JSON_OPTION, MATCH_OPTION, PID_OPTION

if TYPE_CHECKING:
    from profiler.capture.stacks import StackSample

app = typer.Typer(help="CPU and stacks: py-spy on every worker at once.", no_args_is_help=True)

SHOWN_FRAMES = 12


@app.command()
def dump(
    pid: list[int] | None = PID_OPTION,
    match: str | None = MATCH_OPTION,
    as_json: bool = JSON_OPTION,
    show_locals: bool = typer.Option(
        False, "--locals", help="Include local variables (may show secrets: use with care)."
    ),
    native: bool = typer.Option(False, "--native", help="Include native (C) frames."),
    nonblocking: bool = typer.Option(
        False, "--nonblocking", help="Do not pause the workers while reading their stacks."
    ),
) -> None:
    """The stacks of every thread of every worker right now, identical stacks counted once.

    Example: profiler cpu dump --pid 4242
    """
    import shlex

    from profiler.capture.stacks import dump_command, dump_workers, fold
    from profiler.errors import AttachError
    from profiler.targets.discovery import TargetSpec, attach_pids

    targets = attach_pids(TargetSpec(tuple(pid or ()), match))
    if not targets:
        raise AttachError(
            "no workers to dump", hint="name them with --pid or --match (see: profiler workers)"
        )
    options: dict[str, Any] = {"native": native, "locals_": show_locals, "nonblocking": nonblocking}
    for target in targets:
        console.detail(shlex.join(dump_command(target, **options)))
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
