"""``profiler watch``: the flight recorder, always on, an incident session per rule that fires."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from profiler.cli.options import DSN_OPTION, PG_INTERVAL_OPTION, target_options

if TYPE_CHECKING:
    from profiler.targets.discovery import TargetSpec
    from profiler.watch.settings import WatchSettings


@target_options
def watch(
    target: TargetSpec,
    dsn: str | None = DSN_OPTION,
    output: Path = typer.Option(
        ..., "-o", "--output", help="Folder for incidents (kept across restarts)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, help="Serve Prometheus metrics on this port (0: any)."
    ),
    metrics_address: str = typer.Option(
        "127.0.0.1", "--metrics-address", help="Address for --metrics-port (0.0.0.0: all)."
    ),
    max_disk: str = typer.Option(
        "1G", "--max-disk", help="Size cap of the folder; oldest incidents deleted first."
    ),
    mem_on: list[str] | None = typer.Option(
        None,
        "--mem-on",
        help="Run memray in the burst of this memory rule (rss-growth, memory-limit, "
        "worker-vanished). Repeatable.",
        show_default=False,
    ),
    # --tasks and --pool-capacity as in `session run`, with help for the recorder; then one
    # option per rule threshold and interval: typer declarations, alike in shape by nature.
    tasks: bool = typer.Option(
        True,
        "--tasks/--no-tasks",
        help="Inject the asyncio task sampler into a burst's workers (names the coroutine).",
    ),
    idle_threshold: float = typer.Option(
        10.0, "--idle-threshold", min=0.0, help="Seconds idle in transaction before it fires."
    ),
    pool_capacity: int | None = typer.Option(
        None,
        "--pool-capacity",
        min=1,
        help="pool_size + max_overflow per worker; turns the pool-saturation rule on.",
    ),
    pool_at_cap: float = typer.Option(
        5.0, "--pool-at-cap", min=0.0, help="Seconds a worker's pool stays at its cap."
    ),
    blocked_loop_samples: int = typer.Option(
        1, "--blocked-loop-samples", min=1, help="Event-loop samples asleep in a pool checkout."
    ),
    rss_growth: str = typer.Option(
        "50M", "--rss-growth", help="RSS growth per minute (over --rss-window) that fires."
    ),
    rss_window: float = typer.Option(
        120.0, "--rss-window", min=2.0, help="Seconds the RSS growth rate is measured over."
    ),
    memory_fraction: float = typer.Option(
        0.9, "--memory-fraction", min=0.01, max=1.0, help="Share of the memory limit that fires."
    ),
    memory_limit: str | None = typer.Option(
        None,
        "--memory-limit",
        help="A worker's memory limit when no cgroup sets one (e.g. 2G).",
        show_default=False,
    ),
    cooldown: float = typer.Option(
        600.0, "--cooldown", min=0.0, help="Seconds before the same rule may fire again."
    ),
    max_incidents: int = typer.Option(
        50, "--max-incidents", min=1, help="Incidents this run may write."
    ),
    ring: float = typer.Option(
        300.0, "--ring", min=1.0, help="Seconds of history prepended to an incident."
    ),
    pg_interval: float = PG_INTERVAL_OPTION,
    stack_interval: float = typer.Option(
        5.0, "--stack-interval", min=0.5, help="Seconds between stack dumps outside bursts."
    ),
    burst_interval: float = typer.Option(
        0.2, "--burst-interval", min=0.05, help="Seconds between samples in a burst."
    ),
    burst: float = typer.Option(20.0, "--burst", min=1.0, help="Seconds a burst lasts."),
    duration: float | None = typer.Option(
        None, "-d", "--duration", min=1.0, help="Stop after S seconds; else until stopped."
    ),
) -> None:
    """The flight recorder: always on, an incident session per rule that fires.

    Samples pg_stat_activity with ownership (1 Hz), RSS, membership and stacks
    (0.2 Hz) into a 5-minute buffer; when a rule fires, the owning workers get
    a 20 s burst of stack dumps and task samples, written with the buffer as an
    incident session in DIR (read it with session show, report, publish).
    Stopped by Ctrl-C or SIGTERM, it exits 0: stopping is how a recorder ends.

    Example: profiler watch --dsn "$DATABASE_URL" -o /var/lib/profiler --metrics-port 9464
    """
    from profiler.watch.settings import RuleSettings, WatchSettings, parse_size

    # each option to its field by keyword: the records' construction, alike others in shape only
    rules = RuleSettings(
        idle_in_tx_seconds=idle_threshold,
        pool_capacity=pool_capacity,
        pool_at_cap_seconds=pool_at_cap,
        blocked_loop_samples=blocked_loop_samples,
        rss_growth_bytes_per_minute=parse_size(rss_growth),
        rss_growth_window=rss_window,
        memory_limit_fraction=memory_fraction,
        memory_limit_bytes=None if memory_limit is None else parse_size(memory_limit),
    )
    settings = WatchSettings(
        pg_interval=pg_interval,
        stack_interval=stack_interval,
        ring_seconds=ring,
        burst_interval=burst_interval,
        burst_seconds=burst,
        cooldown_seconds=cooldown,
        max_incidents=max_incidents,
        max_disk_bytes=parse_size(max_disk),
        mem_on=frozenset(mem_on or ()),
        tasks=tasks,
        rules=rules,
    )
    _run(target, dsn, output, settings, metrics_port, metrics_address, duration)


def _run(
    target: TargetSpec,
    dsn: str | None,
    output: Path,
    settings: WatchSettings,
    metrics_port: int | None,
    metrics_address: str,
    duration: float | None,
) -> None:
    import threading

    from profiler.cli import console
    from profiler.cli.signals import stop_on_signals
    from profiler.errors import AttachError, UsageError
    from profiler.outputs import prepare_directory
    from profiler.pg.dsn import resolve
    from profiler.session.run import master_of
    from profiler.targets.discovery import find_workers
    from profiler.watch.metrics import LiveState, MetricsServer
    from profiler.watch.recorder import Recorder

    resolved = resolve(dsn)
    if resolved is None:
        raise UsageError(
            "no PostgreSQL DSN", hint="pass --dsn, or set PROFILER_DSN or DATABASE_URL"
        )
    found = find_workers(target, console.warn)
    workers = [w for w in found if w.role != "master"]
    if not workers:
        raise AttachError(
            "no workers to watch", hint="name them with --pid or --match (see: profiler workers)"
        )
    root = prepare_directory(output).resolve()
    live = LiveState()
    recorder = Recorder(
        root,
        resolved,
        workers,
        settings,
        master_pid=master_of(found, [w.pid for w in workers]),
        rediscover=lambda: find_workers(target),
        live=live,
        warn=console.warn,
        info=console.info,
    )
    server = None
    if metrics_port is not None:
        server = MetricsServer(live, metrics_port, metrics_address)
        console.info(f"metrics on http://{metrics_address}:{server.port}/metrics")
    with stop_on_signals(recorder.stop.set) as stopped_by:
        timer = None
        if duration is not None:
            timer = threading.Timer(duration, recorder.stop.set)
            timer.daemon = True
            timer.start()
        console.info(
            f"watching {len(workers)} worker(s) into {root} (Ctrl-C or SIGTERM stops; exit 0)"
        )
        try:
            stats = recorder.run()
        finally:
            recorder.stop.set()
            if timer is not None:
                timer.cancel()
            if server is not None:
                server.close()
    how = f"stopped by {stopped_by[0]}" if stopped_by else "stopped"
    console.info(
        f"watch {how}: {stats.snapshots} snapshots, {len(stats.incidents)} incident(s) in {root}"
    )
