"""Rich tables that never cut what a user copies: PIDs, ports, paths, commands.

rich fits a table to the terminal by wrapping cells and, when a word is
wider than its column, ending it with an ellipsis: a PID printed as ``146…``
in an 80-column terminal is worse than no PID. Marking a column here gives it
a minimum width from its cells, after the rows are in (rich never shrinks a
column below it; the table grows wider than the terminal instead, and the
terminal wraps the line without breaking the value):

- :func:`keep_whole`: the cell is one value (a PID, ``addr:port``, a file
  name) and never wraps;
- :func:`keep_words`: the cell may wrap between words but never inside one
  (an owner ``4242 python -m gunicorn``, a fix command, a list of paths).

Piped output is not laid out for a terminal at all (``profiler.cli.console``).
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.errors import MarkupError
from rich.table import Column, Table
from rich.text import Text


def keep_whole(table: Table, *headers: str) -> Table:
    """Columns ``headers`` of ``table`` never wrap and are never cut; call after adding rows."""
    for column in _named(table, headers):
        column.no_wrap = True
        column.overflow = "fold"
        texts = [*str(column.header).splitlines(), *_texts(column)]
        column.min_width = max((cell_len(text) for text in texts), default=1)
    return table


def keep_words(table: Table, *headers: str) -> Table:
    """Columns ``headers`` wrap only between words, no word is cut; call after adding rows."""
    for column in _named(table, headers):
        column.overflow = "fold"
        texts = [str(column.header), *_texts(column)]
        column.min_width = max((cell_len(w) for text in texts for w in text.split()), default=1)
    return table


def _named(table: Table, headers: tuple[str, ...]) -> list[Column]:
    columns = [column for column in table.columns if str(column.header) in headers]
    missing = set(headers) - {str(column.header) for column in columns}
    if missing:  # a renamed header must not silently turn the protection off
        raise ValueError(f"no column {sorted(missing)} in this table")
    return columns


def _texts(column: Column) -> list[str]:
    """Each line of each cell as shown (markup removed); other renderables are left to rich."""
    return [line for cell in column.cells for line in _plain(cell).splitlines()]


def _plain(cell: object) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except MarkupError:  # rich shows it as it is, then
            return cell
    return ""
