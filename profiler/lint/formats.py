"""``profiler lint`` findings as lines editors and CI read: ``path:line:col: CODE message``.

The same shape as ruff, flake8 and mypy print, so a problem matcher
(``^(.*):(\\d+):(\\d+): (\\w+) (.*)$``), an editor's "go to error" and
``grep``/``sort`` work on it unchanged; and GitHub Actions workflow commands
(``::error file=...``), which annotate the pull request's diff without a SARIF
upload. One line per flagged handler and rule, at the handler's ``def``: the
same results, in the same order, as the SARIF log.

Paths are PATH joined with the file's path under it (``app/api/tools.py`` for
``profiler lint app/``), so they resolve from where the lint ran.
"""

from __future__ import annotations

from pathlib import PurePath

from profiler.lint.model import LintResult


def located(base: PurePath, file: str) -> str:
    """A finding's file as a path from the working directory: ``base`` (PATH's folder) / file."""
    return (base / file).as_posix()


def text_lines(result: LintResult, base: PurePath) -> list[str]:
    """``path:line:col: CODE message``, one a line, sorted as the findings are (file, line)."""
    return [
        f"{located(base, f.file)}:{f.line}:{f.column}: {rule.id} {_one_line(text)}"
        for f in result.findings
        for rule, text, _ in f.messages()
    ]


def github_lines(result: LintResult, base: PurePath) -> list[str]:
    """GitHub Actions workflow commands: ``::error file=F,line=L,col=C,title=CODE::message``.

    ``error`` or ``warning`` by the rule's level. Values are escaped as the
    runner expects (``%``, CR and LF in the message; also ``:`` and ``,`` in
    properties), so a detail holding ``file.py:51`` cannot cut a property.
    """
    lines = []
    for finding in result.findings:
        for rule, text, _ in finding.messages():
            properties = ",".join(
                f"{key}={_escape_property(value)}"
                for key, value in (
                    ("file", located(base, finding.file)),
                    ("line", str(finding.line)),
                    ("col", str(finding.column)),
                    ("title", rule.id),
                )
            )
            lines.append(f"::{rule.level} {properties}::{_escape_data(_one_line(text))}")
    return lines


def _one_line(text: str) -> str:
    """Whitespace runs (a newline in a detail) as one space: a finding is one line."""
    return " ".join(text.split())


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")
