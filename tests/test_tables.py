"""profiler.report.tables: columns a user copies stay whole however narrow the terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from profiler.report.tables import keep_whole, keep_words

PID = "4194301"
OWNER = f"{PID} python -m gunicorn app:app --workers 4"


def _render(table: Table, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, no_color=True, soft_wrap=True)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _table() -> Table:
    table = Table("pid", "owner", "query")
    table.add_row(PID, OWNER, "SELECT * FROM tools WHERE id = $1 FOR UPDATE")
    return table


def test_a_plain_table_cuts_the_pid_in_a_narrow_terminal() -> None:
    # GIVEN the table without protection: rich ends a long word with an ellipsis
    text = _render(_table(), 20)
    # THEN the PID is cut (what the helpers are for)
    assert PID not in text


def test_keep_whole_and_keep_words_keep_values_whole() -> None:
    # GIVEN the same table, its pid kept whole and its owner wrapped between words only
    table = keep_words(keep_whole(_table(), "pid"), "owner")
    # WHEN rendered 20 columns wide
    text = _render(table, 20)
    # THEN the PID is whole in its column and in the owner, and app:app was not folded
    assert text.count(PID) == 2, text
    assert "app:app" in text, text


def test_a_header_that_is_not_there_is_an_error() -> None:
    with pytest.raises(ValueError, match="no column"):
        keep_whole(_table(), "PID")
