"""``profiler session``: every probe in one window; the folder it leaves; comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from profiler.cli.options import (
    DSN_OPTION,
    IDLE_THRESHOLD_OPTION,
    JSON_OPTION,
    PG_INTERVAL_OPTION,
    PGBOUNCER_OPTION,
    duration_option,
    target_options,
)

if TYPE_CHECKING:
    from profiler.targets.discovery import TargetSpec

app = typer.Typer(
    help="Sessions: PostgreSQL activity, stacks, RSS, flamegraphs and memray in one window.\n\n"
    "Example: profiler session run --pid 4242 -d 60 -o sessions/incident",
    no_args_is_help=True,
)


@app.command()
@target_options
def run(
    target: TargetSpec,
    dsn: str | None = DSN_OPTION,
    pgbouncer: str | None = PGBOUNCER_OPTION,
    duration: float | None = duration_option("Seconds; without it, until Ctrl-C.", minimum=1.0),
    cpu: bool = typer.Option(True, "--cpu/--no-cpu", help="py-spy flamegraphs of every worker."),
    mem: bool = typer.Option(False, "--mem/--no-mem", help="memray on every worker (costly)."),
    pg_interval: float = PG_INTERVAL_OPTION,
    dump_interval: float = typer.Option(
        1.0, "--dump-interval", min=0.1, help="Seconds between timestamped stack dumps."
    ),
    rss_interval: float = typer.Option(
        0.5, "--rss-interval", min=0.05, help="Seconds between RSS samples."
    ),
    lend_memray: bool = typer.Option(
        False, "--lend-memray", help="With --mem: lend our memray to workers that have none."
    ),
    # --tasks and --pool-capacity are `watch` options too, alike in shape; each command's help
    # says what the flag does there (here a session's probe; in watch a burst's, a rule's).
    tasks: bool = typer.Option(
        True,
        "--tasks/--no-tasks",
        help="Inject the asyncio task sampler: which coroutine holds each connection.",
    ),
    task_interval: float = typer.Option(
        0.2, "--task-interval", min=0.05, help="Seconds between task sampler rounds."
    ),
    pool_capacity: int | None = typer.Option(
        None,
        "--pool-capacity",
        min=1,
        help="pool_size + max_overflow per worker, if known (else inferred for saturation).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="The session folder to create."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that is not empty."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Record a profiling session: every probe started together, stopped together.

    Example: profiler session run --pid 4242 --dsn "$DATABASE_URL" -d 60 -o sessions/before
    """
    from profiler.cli.session_run import run_session_command
    from profiler.session.manifest import SessionSettings

    settings = SessionSettings(
        duration=duration,
        pg_interval=pg_interval,
        dump_interval=dump_interval,
        rss_interval=rss_interval,
        cpu=cpu,
        mem=mem,
        lend_memray=lend_memray,
        tasks=tasks,
        task_interval=task_interval,
        pool_capacity=pool_capacity,
    )
    run_session_command(
        target,
        dsn,
        settings,
        output,
        force=force,
        as_json=as_json,
        pgbouncer=pgbouncer,
    )


@app.command()
def show(
    directory: Path = typer.Argument(..., help="A session folder (from session run -o DIR)."),
    idle_threshold: float = IDLE_THRESHOLD_OPTION,
    # alike in shape to other commands' folder options (report's --source, lab load's
    # --record-into): typer declarations, each with its own help
    source: Path | None = typer.Option(
        None,
        "--source",
        help="The gateway's source folder: join the Diagnosis to `profiler lint` on it.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """The Diagnosis, findings, measures and the code paths that held connections.

    Example: profiler session show sessions/before --source src/gateway
    """
    from profiler.analysis.findings import Thresholds
    from profiler.cli.session_show import show_command

    show_command(
        directory,
        Thresholds(idle_in_transaction_seconds=idle_threshold),
        as_json=as_json,
        source=source,
    )


@app.command()
def compare(
    before: Path = typer.Argument(..., help="The session before the change."),
    after: Path = typer.Argument(..., help="The session after it."),
    fail_on: list[str] | None = typer.Option(
        None,
        "--fail-on",
        help="Exit 1 when AFTER is worse on this rule (repeatable): any, idle-in-transaction, "
        "held-connections, throughput, peak-rss, vanished-workers, or a finding's rule.",
    ),
    idle_threshold: float = IDLE_THRESHOLD_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Before/after: idle-in-transaction count and age, connections held, throughput, RSS.

    Example: profiler session compare sessions/before sessions/after --fail-on idle-in-transaction
    """
    from profiler.analysis.findings import Thresholds
    from profiler.cli.session_show import compare_command

    compare_command(
        before,
        after,
        Thresholds(idle_in_transaction_seconds=idle_threshold),
        fail_on or [],
        as_json=as_json,
    )
