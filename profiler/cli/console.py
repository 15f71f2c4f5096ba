"""The two consoles: ``out`` carries data (tables, JSON), ``err`` carries talk.

Keeping them apart is what makes ``profiler ... --json | jq`` work while
progress and warnings still reach the terminal.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from rich.table import Table

_no_color = bool(os.environ.get("NO_COLOR"))

# Piped or redirected, stdout is not laid out for a terminal: rich would fit tables to
# 80 columns (or $COLUMNS) and cut PIDs and paths with an ellipsis. As wide as the content
# instead: a table then takes its natural width, and `| cat`, `| grep`, `> file` see
# every value whole. In a terminal, rich fits the terminal (tables keep copied columns
# whole: profiler.report.tables).
PIPED_WIDTH = 100_000


def _is_terminal(stream: Any) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file: captured, closed
        return False


out = Console(
    no_color=_no_color,
    soft_wrap=True,
    highlight=False,
    width=None if _is_terminal(sys.stdout) else PIPED_WIDTH,
)
err = Console(stderr=True, no_color=_no_color, soft_wrap=True, highlight=False)

# -1 quiet, 0 normal, 1 verbose (-v), 2 debug (-vv: tracebacks, external commands)
verbosity = 0


def set_verbosity(level: int) -> None:
    global verbosity  # noqa: PLW0603 - one process-wide knob, set once by the root callback
    verbosity = level


def info(message: str) -> None:
    """Progress and results talk; silenced by ``-q``."""
    if verbosity >= 0:
        err.print(message)


def detail(message: str) -> None:
    """What ``-v`` adds: exact external commands, timings, paths."""
    if verbosity >= 1:
        err.print(f"[dim]{message}[/dim]")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def print_lines(lines: list[str]) -> None:
    """Plain lines on stdout, as they are: no markup, no wrapping, whatever the width."""
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def listing(title: str | None = None) -> Table:
    """A table for ``out``: no box, no edge padding, its title (if any) flush left.

    Each listing command adds its columns (``profiler.report.tables`` keeps copied
    ones whole) and prints it on ``out``.
    """
    from rich.table import Table

    return Table(box=None, pad_edge=False, title=title, title_justify="left")


def print_json(data: Any) -> None:
    """Sorted keys and a trailing newline: stable bytes for scripts and diffs."""
    sys.stdout.write(json.dumps(data, sort_keys=True, indent=2, default=str) + "\n")
    sys.stdout.flush()
