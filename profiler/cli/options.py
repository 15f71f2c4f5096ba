"""Options shared by several commands, declared once so they read the same everywhere."""

from __future__ import annotations

import typer

DSN_OPTION = typer.Option(
    None,
    "--dsn",
    help="PostgreSQL DSN; else $PROFILER_DSN, else $DATABASE_URL. SQLAlchemy URLs accepted.",
    show_default=False,
)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON (sorted keys) on stdout.")
