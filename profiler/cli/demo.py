"""``profiler demo``: the README's main job."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from profiler import units
from profiler.cli import console

if TYPE_CHECKING:
    from profiler.demo import DemoResult

TABLE = (
    ("idle_in_transaction", "transactions idle in tx > 1 s", "{:.0f}"),
    ("idle_in_transaction_peak", "idle-in-tx connections (max at once)", "{:.0f}"),
    ("idle_age_max", "idle-in-tx age (max)", "{:.1f} s"),
    ("throughput_rps", "throughput (successful)", "{:.1f} req/s"),
    ("load_errors", "load errors", "{:.0f}"),
    ("peak_rss_bytes", "peak worker RSS", "bytes"),
)


def demo(
    workers: int = typer.Option(2, "--workers", min=1, max=8, help="Gateway worker processes."),
    users: int = typer.Option(24, "--users", min=1, max=200, help="Concurrent users of the load."),
    seconds: float = typer.Option(
        10.0, "--seconds", min=3.0, max=120.0, help="Seconds of load per strategy."
    ),
    mem: bool = typer.Option(True, "--mem/--no-mem", help="memray on the workers when possible."),
    output: Path = typer.Option(
        Path("profiler-demo"), "-o", "--output", help="Where sessions and the site go."
    ),
    keep: bool = typer.Option(
        False, "--keep", help="Refuse to replace a previous demo's output instead of replacing it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    via: str | None = typer.Option(
        None, "--via", help="Run the lab through a real pooler: pgbouncer.", show_default=False
    ),
    pool_mode: str = typer.Option(
        "session", "--pool-mode", help="With --via pgbouncer: session or transaction pooling."
    ),
) -> None:
    """The incident and its fix, recorded, compared and published on a throwaway PostgreSQL.

    The lab under load in held then fresh mode, each recorded by a session, the two
    compared, published into a copy of the site, and the site built.

    Example: profiler demo --users 24 --seconds 10
    """
    from profiler.cli.signals import Terminated, terminate_as_exception
    from profiler.demo import DemoOptions, prepare_output, run_demo
    from profiler.errors import InterruptedCapture

    if via is not None or pool_mode != "session":
        from profiler.errors import UsageError
        from profiler.lab import pgbouncer

        if via not in pgbouncer.VIAS or pool_mode not in pgbouncer.POOL_MODES:
            raise UsageError(
                f"--via {via} --pool-mode {pool_mode}: use --via pgbouncer "
                "[--pool-mode session|transaction]"
            )
        pgbouncer.binary()  # missing: exit 5 with the install command, before anything starts
    directory = prepare_output(output, keep=keep)
    options = DemoOptions(
        directory,
        workers=workers,
        users=users,
        seconds=seconds,
        mem=mem,
        via=via,
        pool_mode=pool_mode,
    )
    try:
        with terminate_as_exception(), console.err.status("") as status:
            result = run_demo(options, step=status.update)
    except (KeyboardInterrupt, Terminated) as stopped:  # what started was stopped on the way out
        how = "Ctrl-C" if isinstance(stopped, KeyboardInterrupt) else "SIGTERM"
        raise InterruptedCapture(
            f"demo stopped by {how}; the lab and PostgreSQL it started are stopped",
            hint=f"what was recorded so far is in {directory}",
        ) from None
    for note in result.notes:
        console.warn(note)
    if as_json:
        console.print_json(result.comparison.to_json())
        return
    _print(result)


def _print(result: DemoResult) -> None:
    from rich.table import Table

    changes = {change.measure.name: change for change in result.comparison.changes}
    table = Table(title="held (before) vs fresh (after)", title_justify="left", box=None)
    for column in ("", "held", "fresh", ""):
        table.add_column(column, justify="left" if not column else "right")
    for name, label, fmt in TABLE:
        change = changes[name]
        table.add_row(label, _cell(change.before, fmt), _cell(change.after, fmt), change.verdict)
    console.out.print(table)
    for name, summary in (("held", result.comparison.before), ("fresh", result.comparison.after)):
        cause = summary.diagnosis[0].title if summary.diagnosis else "no cause found"
        console.out.print(f"{name}, diagnosis: {cause}")
    top = result.comparison.before.findings
    if top:
        console.out.print(f"held, top finding: {top[0].title}")
    console.out.print(f"sessions: {', '.join(str(p) for p in result.sessions.values())}")
    if result.site is not None:
        console.out.print(
            f"site: {result.site / 'index.html'}\n"
            f"serve it: mkdocs serve -f {result.site.parent / 'mkdocs.yml'}"
        )


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "bytes":
        return units.size(value)
    return fmt.format(value)
