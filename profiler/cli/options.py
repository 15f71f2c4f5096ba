"""Options shared by several commands, declared once so they read the same everywhere."""

from __future__ import annotations

from typing import Any

import typer

DSN_OPTION = typer.Option(
    None,
    "--dsn",
    help="PostgreSQL DSN; else $PROFILER_DSN, else $DATABASE_URL. SQLAlchemy URLs accepted.",
    show_default=False,
)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON (sorted keys) on stdout.")
PID_OPTION = typer.Option(
    None,
    "--pid",
    help="A worker; a server master means all its workers. Repeatable.",
    show_default=False,
)
MATCH_OPTION = typer.Option(
    None, "--match", help="Every Python process whose command line matches this regex."
)


def duration_option(help: str, *, minimum: float = 0.1) -> Any:
    """``-d/--duration S`` for captures: None means "until Ctrl-C", which every help says.

    ``Any``, as ``typer.Option`` itself returns: it stands as a parameter's default.
    """
    return typer.Option(None, "-d", "--duration", min=minimum, help=help, show_default=False)
