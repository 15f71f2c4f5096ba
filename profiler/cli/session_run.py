"""``profiler session run``, imported only when it runs (pandas, psycopg, psutil)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from profiler import units
from profiler.cli import console
from profiler.cli.signals import stop_on_signals
from profiler.errors import AttachError, InterruptedCapture, UsageError
from profiler.session.manifest import SessionSettings
from profiler.session.probes import Probe
from profiler.session.run import prepare_session, run_session
from profiler.targets.discovery import TargetSpec, find_workers


def run_session_command(
    spec: TargetSpec,
    dsn: str | None,
    settings: SessionSettings,
    output: Path,
    *,
    force: bool,
    as_json: bool,
    pgbouncer: str | None = None,
) -> None:
    from profiler.pg import pgbouncer as pooler
    from profiler.pg.connect import connection
    from profiler.pg.dsn import resolve

    console_dsn = pooler.resolve(pgbouncer)  # unparseable: exit 2; unreachable: a warning later
    resolved = resolve(dsn)
    if resolved is None:
        raise UsageError(
            "no PostgreSQL DSN", hint="pass --dsn, or set PROFILER_DSN or DATABASE_URL"
        )
    with connection(resolved):  # unreachable or refused: exit 4 before anything starts
        pass
    found = find_workers(spec)
    workers = [w for w in found if w.role != "master"]
    if not workers:
        raise AttachError(
            "no workers to profile", hint="name them with --pid or --match (see: profiler workers)"
        )
    directory = _prepare(output, force=force)
    prepared = prepare_session(
        directory, resolved, found, settings, console.warn, pgbouncer=console_dsn
    )
    manifest, probes, stop = prepared.manifest, prepared.probes, prepared.stop
    pids = [target["pid"] for target in manifest.targets]
    how_long = f"for {settings.duration:g}s" if settings.duration else "until Ctrl-C"
    console.info(f"session {directory}: {len(pids)} worker(s), {len(probes)} probes {how_long}")

    try:
        with stop_on_signals(stop.set) as signalled, console.err.status("") as status:

            def tick(elapsed: float, running: list[Probe]) -> None:
                left = (
                    f"{units.seconds(settings.duration - elapsed, 0)} left"
                    if settings.duration
                    else ""
                )
                parts = " · ".join(probe.progress() for probe in running)
                status.update(f"{units.seconds(elapsed, 0)} {left} · {parts} (Ctrl-C stops)")

            result = run_session(directory, manifest, probes, stop, tick=tick)
    finally:
        stop.set()  # a second signal interrupts run_session: its probes still wind down
    if "SIGTERM" in signalled:
        result["interrupted"] = manifest.interrupted = True
        manifest.write(directory)
    _report(result, directory, as_json)
    if result["interrupted"]:
        raise InterruptedCapture(
            f"session stopped by {signalled[0] if signalled else 'a signal'} before its end",
            hint=f"everything captured is kept in {directory}",
        )


def _prepare(output: Path, *, force: bool) -> Path:
    from profiler.outputs import prepare_directory

    if output.exists() and any(output.iterdir()) and not force:
        raise UsageError(
            f"{output} is not empty", hint="pass a new -o DIR, or --force to write into it"
        )
    return prepare_directory(output).resolve()


def _report(result: dict[str, Any], directory: Path, as_json: bool) -> None:
    for name, probe in result["probes"].items():
        if probe["status"] in ("failed", "partial"):
            console.warn(f"probe {name} {probe['status']}: {probe['error']}")
        empty = probe.get("facts", {}).get("no_task_seen")
        if empty:
            console.warn(
                f"probe {name}: no asyncio task seen in worker(s) {', '.join(map(str, empty))}: "
                "no asyncio event loop there, or a loop whose tasks asyncio does not register"
            )
    if as_json:
        console.print_json(result)
        return
    from profiler.report.tables import keep_words

    table = console.listing(f"session {directory}/")
    for column in ("probe", "status", "files"):
        table.add_column(column, overflow="fold")
    for name, probe in result["probes"].items():
        table.add_row(name, probe["status"], ", ".join(probe["files"][:4]) or "-")
    keep_words(table, "files")
    console.out.print(table)
