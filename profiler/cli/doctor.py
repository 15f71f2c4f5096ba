"""``profiler doctor``: what works here and what is missing, with fixes."""

from __future__ import annotations

from dataclasses import asdict

from profiler.cli import console
from profiler.cli.options import DSN_OPTION, JSON_OPTION

_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}


def doctor(dsn: str | None = DSN_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Check what profiling needs on this host: py-spy, memray, a debugger, ptrace, PostgreSQL.

    Exits non-zero when something required is missing (4 for PostgreSQL,
    5 for a missing tool, 3 when attaching is not allowed).

    Example: profiler doctor --dsn postgresql://app@127.0.0.1:5432/app
    """
    from rich.table import Table

    from profiler.doctor import diagnose, verdict
    from profiler.pg.dsn import resolve
    from profiler.report.tables import keep_words

    checks = diagnose(resolve(dsn))
    if as_json:
        console.print_json(
            [
                {**asdict(check), "status": check.status.value, "exit_code": int(check.exit_code)}
                for check in checks
            ]
        )
    else:
        table = Table("check", "status", show_lines=False)
        table.add_column("detail", overflow="fold")
        table.add_column("fix", overflow="fold")
        for check in checks:
            style = _STATUS_STYLE[check.status.value]
            table.add_row(
                check.name, f"[{style}]{check.status.value}[/{style}]", check.detail, check.fix
            )
        keep_words(table, "detail", "fix")
        console.out.print(table)
    failure = verdict(checks)
    if failure is not None:
        raise failure
