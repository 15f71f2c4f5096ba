"""The one Markdown escaper: frame names survive Python-Markdown (the site's renderer) intact."""

from __future__ import annotations

import doctest
import html
import re

import markdown as python_markdown
import pytest

from profiler.report import markdown as md
from profiler.report.site import Entry

FRAMES = [
    "wrap_app_handling_exceptions.<locals>.wrapped_app",
    "solve_dependencies → _AsyncGeneratorContextManager.__aenter__",
    "__call__ | *args [x] {y} #z `tick` \\back",
]


def _rendered_text(source: str) -> str:
    """What a reader sees: the HTML's text, tags removed and entities decoded."""
    rendered = python_markdown.markdown(source, extensions=["tables"])
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


def test_the_modules_doctests_pass() -> None:
    result = doctest.testmod(md)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("frame", FRAMES)
def test_escaped_text_renders_as_written(frame: str) -> None:
    assert _rendered_text(md.escape(frame)) == frame
    rendered = python_markdown.markdown(md.escape(frame))
    assert "<strong>" not in rendered and "<em>" not in rendered


@pytest.mark.parametrize("frame", FRAMES)
def test_a_findings_index_entry_renders_its_title_as_written(frame: str) -> None:
    line = Entry("held", frame, "detail").line()
    assert _rendered_text(line) == f"{frame}: detail"


def test_titles_keep_their_code_spans_and_escape_the_rest() -> None:
    source = md.with_code_spans("held in `invoke_tool → call_tool` by wrap_app.<locals>.__aenter__")
    rendered = python_markdown.markdown(source)
    assert "<code>invoke_tool → call_tool</code>" in rendered
    assert (
        _rendered_text(source) == "held in invoke_tool → call_tool by wrap_app.<locals>.__aenter__"
    )


def test_a_table_cell_keeps_a_pipe_out_of_the_cell_split() -> None:
    row = f"| {md.code('a | b')} | {md.cell('c | d')} |"
    table = f"| x | y |\n|---|---|\n{row}\n"
    rendered = python_markdown.markdown(table, extensions=["tables"])
    assert rendered.count("<td>") == 2, rendered
