"""The one Markdown escaper every page uses: findings pages, comparisons and the site index.

Our pages are read by two renderers: Python-Markdown (the MkDocs site) and GitHub (a
report opened in a repository). Frame names are the hard case: ``__aenter__`` turns
bold and ``wrap_app.<locals>`` loses its ``<locals>`` (taken as an HTML tag) unless
each is escaped the one way both renderers understand: ``<`` and ``>`` as entities
(Python-Markdown has no ``\\<``), every other special character backslash-escaped.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_\[\]{}|#])")
_SPACE = re.compile(r"\s+")


def escape(text: str) -> str:
    """Plain text, safe in running text, in link text and inside a table cell.

    >>> escape("solve_dependencies → _AsyncGeneratorContextManager.__aenter__")
    'solve\\\\_dependencies → \\\\_AsyncGeneratorContextManager.\\\\_\\\\_aenter\\\\_\\\\_'
    >>> escape("wrap_app.<locals>.app")
    'wrap\\\\_app.&lt;locals&gt;.app'
    """
    flat = _SPACE.sub(" ", text).replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", flat)


def code(text: str) -> str:
    """An inline code span, safe in a table cell on both renderers.

    ``|`` becomes ``¦``: GitHub splits cells on a pipe even inside code, and
    Python-Markdown would keep a ``\\|`` literally.

    >>> code("SELECT a | b")
    '`SELECT a ¦ b`'
    >>> code("a `tick`")
    '`` a `tick` ``'
    >>> code("")
    '-'
    """
    flat = " ".join(text.split()).replace("|", "¦")
    if not flat:
        return "-"
    fence = "``" if "`" in flat else "`"
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def with_code_spans(text: str) -> str:
    """Text whose backticked spans stay code and whose rest is escaped (finding titles).

    >>> with_code_spans("held across `call_tool` in invoke_tool")
    'held across `call_tool` in invoke\\\\_tool'
    >>> with_code_spans("an unbalanced ` tick_")
    'an unbalanced \\\\` tick\\\\_'
    """
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unbalanced backtick: all plain text
        return escape(text).strip()
    return "".join(
        code(part) if index % 2 else escape(part) for index, part in enumerate(parts)
    ).strip()


def cell(text: str) -> str:
    """A table cell's plain text; an empty one shows ``-``.

    >>> cell("  ")
    '-'
    """
    return escape(text.strip()) or "-"
