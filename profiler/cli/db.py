"""``profiler db``: pg_stat_activity, every backend mapped to the process that owns it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from profiler.cli import console
from profiler.cli.options import DSN_OPTION, JSON_OPTION, PGBOUNCER_OPTION, duration_option

if TYPE_CHECKING:
    from profiler.analysis.activity import Limits
    from profiler.model import Snapshot

app = typer.Typer(
    help="PostgreSQL activity: snapshots, a live view, and the idle-in-transaction gate.\n\n"
    "Example: profiler db snapshot --dsn postgresql://app@127.0.0.1/app",
    no_args_is_help=True,
)

INTERVAL_OPTION = typer.Option(1.0, "--interval", "-i", help="Seconds between samples (>= 0.1).")
QUERY_WIDTH = 80


def _require_dsn(dsn: str | None) -> str:
    from profiler.errors import UsageError
    from profiler.pg.dsn import resolve

    resolved = resolve(dsn)
    if resolved is None:
        raise UsageError(
            "no PostgreSQL DSN given",
            hint="pass --dsn, or set PROFILER_DSN or DATABASE_URL",
        )
    return resolved


def _console(pgbouncer: str | None) -> str | None:
    """The admin console's DSN from --pgbouncer or $PROFILER_PGBOUNCER: exit 2 if unparseable."""
    from profiler.pg.pgbouncer import resolve

    return resolve(pgbouncer)


@app.command()
def snapshot(
    dsn: str | None = DSN_OPTION,
    pgbouncer: str | None = PGBOUNCER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """One snapshot: backends per state, and who holds transactions open, oldest first.

    Example: profiler db snapshot --dsn postgresql://app@127.0.0.1/app --json | jq .summary
    """
    from profiler.pg.sampler import ActivitySampler
    from profiler.report.activity import snapshot_json

    console_dsn = _console(pgbouncer)
    with ActivitySampler(_require_dsn(dsn), warn=console.warn, pgbouncer=console_dsn) as sampler:
        taken = sampler.snapshot()
    if as_json:
        console.print_json(snapshot_json(taken))
        return
    _print_snapshot(taken)


@app.command()
def check(
    dsn: str | None = DSN_OPTION,
    pgbouncer: str | None = PGBOUNCER_OPTION,
    max_idle_in_tx_age: float | None = typer.Option(
        None,
        "--max-idle-in-tx-age",
        min=0,
        help="Seconds a backend may stay idle in transaction [default: 60 when no limit is given].",
    ),
    max_idle_in_tx: int | None = typer.Option(
        None, "--max-idle-in-tx", min=0, help="Backends that may be idle in transaction at once."
    ),
    for_seconds: float | None = typer.Option(
        None, "--for", min=0, help="Keep checking for this long (default: one snapshot)."
    ),
    interval: float = INTERVAL_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The gate a load test runs under: exit 1 if a backend is idle in transaction too long.

    Example: profiler db check --max-idle-in-tx-age 60 --for 600 --json
    """
    from profiler.analysis.activity import Limits, violations
    from profiler.errors import ChecksFailed
    from profiler.model import Snapshot
    from profiler.pg.sampler import ActivitySampler
    from profiler.report.activity import check_json

    if max_idle_in_tx_age is None and max_idle_in_tx is None:
        max_idle_in_tx_age = 60.0
    limits = Limits(max_idle_in_tx_age=max_idle_in_tx_age, max_idle_in_tx=max_idle_in_tx)
    console_dsn = _console(pgbouncer)
    with ActivitySampler(
        _require_dsn(dsn), interval=interval, warn=console.warn, pgbouncer=console_dsn
    ) as sampler:
        if for_seconds:
            console.info(f"checking every {interval:g}s for {for_seconds:g}s")
            taken = [s for s in sampler.run(seconds=for_seconds) if isinstance(s, Snapshot)]
        else:
            taken = [sampler.snapshot()]
    found = violations(taken, limits)
    result = check_json(limits, found, len(taken))
    if as_json:
        console.print_json(result)
    else:
        for v in result["violations"]:
            owner = v["owner"] or {}
            console.out.print(
                f"{v['rule']}: backend {v['pid']} {v['state']} for {v['age_seconds']}s, "
                f"owner {owner.get('pid', '-')} {owner.get('cmdline', '') or ''}: "
                f"{_short(v['query'])}"
            )
    if found:
        raise ChecksFailed(
            f"{len(found)} violation(s) of {_describe(limits)} in {len(taken)} snapshot(s)",
            hint="see which code holds these transactions: profiler session run",
        )
    console.info(f"ok: {_describe(limits)} held over {len(taken)} snapshot(s)")


def _describe(limits: Limits) -> str:
    parts = []
    if limits.max_idle_in_tx_age is not None:
        parts.append(f"idle in transaction <= {limits.max_idle_in_tx_age:g}s")
    if limits.max_idle_in_tx is not None:
        parts.append(f"<= {limits.max_idle_in_tx} idle in transaction at once")
    return " and ".join(parts)


def _short(query: str | None, width: int = QUERY_WIDTH) -> str:
    text = " ".join((query or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_snapshot(taken: Snapshot) -> None:
    from rich.table import Table

    from profiler.analysis.activity import by_state, idle_in_transaction
    from profiler.report.tables import keep_whole, keep_words

    states = Table(
        "state", "backends", "oldest (s)", title=f"pg_stat_activity at {taken.taken_at:%H:%M:%S}"
    )
    for state, summary in by_state(taken).items():
        oldest = "" if summary.oldest_seconds is None else f"{summary.oldest_seconds:.1f}"
        states.add_row(state, str(summary.backends), oldest)
    console.out.print(states)
    held = idle_in_transaction(taken)
    if not held:
        console.out.print("no backend idle in transaction")
        return
    table = Table(
        "age (s)",
        "pid",
        "owner",
        "application",
        "client",
        "query",
        title="idle in transaction, oldest first",
    )
    for backend in held:
        owner = taken.owners.get(backend.pid)
        who = "-" if owner is None else owner.describe()
        client = f"{backend.client_addr or 'local'}:{backend.client_port}"
        table.add_row(
            f"{backend.state_age_seconds or 0:.1f}",
            str(backend.pid),
            who,
            backend.application_name or "",
            client,
            _short(backend.query, 60),
        )
    keep_whole(table, "pid", "client")
    keep_words(table, "owner")
    console.out.print(table)


@app.command()
def watch(
    dsn: str | None = DSN_OPTION,
    pgbouncer: str | None = PGBOUNCER_OPTION,
    interval: float = INTERVAL_OPTION,
    duration: float | None = duration_option("Stop after this many seconds (default: Ctrl-C)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Record every snapshot to this file (JSON Lines)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output file."),
) -> None:
    """A live view of connections: states, idle-in-transaction ages, the longest holders.

    With -o every snapshot is recorded (append-safe JSON Lines); Ctrl-C stops
    cleanly and keeps every sample.

    Example: profiler db watch -i 0.5 -d 600 -o activity.jsonl
    """
    import contextlib
    import threading

    from rich.live import Live

    from profiler.cli.signals import stop_on_signals
    from profiler.errors import InterruptedCapture
    from profiler.model import Gap
    from profiler.pg.dsn import redact
    from profiler.pg.recording import RecordingWriter
    from profiler.pg.sampler import ActivitySampler
    from profiler.report.watch_view import WatchView

    resolved = _require_dsn(dsn)
    console_dsn = _console(pgbouncer)
    stop = threading.Event()
    sampler = ActivitySampler(resolved, interval=interval, warn=console.warn, pgbouncer=console_dsn)
    view = WatchView(interval=interval)
    with stop_on_signals(stop.set) as interrupted, contextlib.closing(sampler):
        sampler.open()
        writer_context = (
            RecordingWriter(
                output,
                {
                    "dsn": redact(resolved),
                    "interval": interval,
                    "server_version": sampler.server_version,
                },
                force=force,
            )
            if output is not None
            else contextlib.nullcontext()
        )
        with (
            writer_context as writer,
            Live(view.render(), console=console.err, auto_refresh=False, transient=False) as live,
        ):
            for item in sampler.run(seconds=duration, stop=stop):
                if writer is not None:
                    writer.add(item)
                if isinstance(item, Gap):
                    console.warn(
                        f"sampling gap {item.started_at:%H:%M:%S}-{item.ended_at:%H:%M:%S}: "
                        f"{item.reason}"
                    )
                else:
                    view.add(item)
                live.update(view.render(), refresh=True)
    if output is not None:
        console.info(f"wrote {view.snapshots} snapshots to {output}")
    if interrupted and duration is not None:
        raise InterruptedCapture(
            f"stopped by {interrupted[0]} before {duration:g}s; {view.snapshots} snapshots kept",
            hint=f"read them with profiler.pg.recording.read({str(output)!r})" if output else None,
        )
