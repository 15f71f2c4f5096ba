"""``profiler lint``: handlers that hold a DB session across slow work, read from the source."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from profiler.cli import console
from profiler.cli.options import JSON_OPTION

if TYPE_CHECKING:
    from profiler.lint import LintResult


class Format(str, Enum):
    """What ``--format`` accepts; ``text`` is the default."""

    TEXT = "text"
    TABLE = "table"
    JSON = "json"
    SARIF = "sarif"
    GITHUB = "github"


def lint(
    # typer declarations, alike in shape to other commands' (report's DIR and -o): own help each
    path: Path = typer.Argument(
        ..., help="The FastAPI app's folder (or one file); never imported.", show_default=False
    ),
    output_format: Format | None = typer.Option(
        None,
        "--format",
        metavar="FORMAT",
        help="text (default): path:line:col: CODE message, one finding a line; table; json; "
        "sarif (SARIF 2.1.0, for GitHub code scanning); github (Actions annotations).",
        show_default=False,
        case_sensitive=False,
    ),
    as_json: bool = JSON_OPTION,
    # Kept for scripts written before --format; hidden from --help, listed in the reference.
    sarif: bool = typer.Option(False, "--sarif", hidden=True, help="Same as --format sarif."),
    fail_on: int | None = typer.Option(
        None,
        "--fail-on",
        metavar="N",
        min=0,
        help="Exit 1 when more than N handlers are flagged; without it, report only (exit 0).",
        show_default=False,
    ),
    # two repeatable lists alike in shape, each adding to its own built-in set
    session_dependency: list[str] | None = typer.Option(
        None,
        "--session-dependency",
        metavar="NAME",
        help="Another dependency that yields a DB session (added to get_db, get_session, "
        "get_async_session, get_db_session). Repeatable.",
        show_default=False,
    ),
    slow_call: list[str] | None = typer.Option(
        None,
        "--slow-call",
        metavar="PATTERN",
        help="Another slow blocking call, as an fnmatch pattern on its qualified name "
        "(added to requests.*, time.sleep, subprocess.*, ...). Repeatable.",
        show_default=False,
    ),
) -> None:
    """Find FastAPI handlers that hold a DB session across awaits, streaming or serialisation.

    Reads the source with ast (nothing is imported or run): routes on apps and
    APIRouters, their session dependencies (Depends(get_db), Annotated aliases,
    dependencies of dependencies, across modules) and what happens while the
    session is open, following calls through service objects into other
    modules. Errors hold it across awaits or slow calls, or in a middleware
    across call_next; warnings only while streaming, serialising ORM objects
    or taking two sessions per request.

    Example: profiler lint app/ --fail-on 0; in a GitHub workflow:
    profiler lint . --format github --fail-on 0
    """
    from profiler.errors import ChecksFailed
    from profiler.lint import lint_path
    from profiler.lint.formats import github_lines, text_lines

    chosen = _chosen_format(output_format, as_json=as_json, sarif=sarif)
    result = lint_path(
        path,
        session_dependencies=tuple(session_dependency or ()),
        slow_calls=tuple(slow_call or ()),
    )
    for skipped in result.skipped:
        console.warn(f"skipped {skipped.file}: {skipped.error}")
    base = path if path.is_dir() else path.parent
    if chosen is Format.JSON:
        console.print_json(result.to_json())
    elif chosen is Format.SARIF:
        console.print_json(result.to_sarif())
    elif chosen is Format.TABLE:
        _print_table(result)
        console.out.print(_summary(result))
    else:
        lines = text_lines(result, base) if chosen is Format.TEXT else github_lines(result, base)
        console.print_lines(lines)
        console.info(_summary(result))
    counts = result.counts()
    if fail_on is not None and counts["flagged"] > fail_on:
        raise ChecksFailed(
            f"{counts['flagged']} handler(s) hold a DB session across slow work "
            f"(more than --fail-on {fail_on})",
            hint="use short-lived sessions: see docs/how-to/fix-with-short-sessions.md",
        )


def _chosen_format(given: Format | None, *, as_json: bool, sarif: bool) -> Format:
    """``--format``, or what the older ``--json``/``--sarif`` flags ask for; two answers clash."""
    from profiler.errors import UsageError

    asked: dict[str, Format] = {}
    if given is not None:
        asked[f"--format {given.value}"] = given
    if as_json:
        asked["--json"] = Format.JSON
    if sarif:
        asked["--sarif"] = Format.SARIF
    if len(set(asked.values())) > 1:
        raise UsageError(
            f"{' and '.join(asked)} ask for different outputs",
            hint="pick one: --format text|table|json|sarif|github",
        )
    return next(iter(asked.values()), Format.TEXT)


def _summary(result: LintResult) -> str:
    counts = result.counts()
    return (
        f"{counts['endpoints']} endpoints in {counts['files']} files: "
        f"{counts['session_holding']} hold a DB session, "
        f"{counts['holding_across_awaits']} across awaits; "
        f"{counts['flagged']} flagged ({counts['errors']} errors, {counts['warnings']} warnings)"
        + (f"; {counts['skipped']} files skipped" if counts["skipped"] else "")
    )


def _print_table(result: LintResult) -> None:
    """One table per file with endpoints: its counts in the title, its flagged handlers."""
    from rich.table import Table

    from profiler.report.tables import keep_whole

    per_file = [row for row in result.per_file() if row.endpoints]
    for row in per_file:
        title = (
            f"{row.file}: {row.endpoints} endpoints, {row.session_holding} holding a session, "
            f"{row.across_awaits} across awaits, {row.flagged} flagged"
        )
        findings = [f for f in result.findings if f.file == row.file]
        if not findings:
            console.out.print(title)
            continue
        table = Table(title=title, title_justify="left", show_lines=True)
        table.add_column("line", justify="right")
        table.add_column("handler")
        table.add_column("route")
        table.add_column("severity")
        table.add_column("session from")
        table.add_column("while the session is open")
        for finding in findings:
            colour = "red" if finding.severity == "error" else "yellow"
            table.add_row(
                str(finding.line),
                finding.handler,
                "\n".join(finding.routes) or "-",
                f"[{colour}]{finding.severity}[/{colour}]",
                "\n".join(finding.dependencies),
                "\n".join(f"{r.line}: {r.kind}: {r.detail}" for r in finding.reasons),
            )
        keep_whole(table, "line", "handler")  # the rest folds: the text format is for copying
        for column in table.columns[2:]:
            column.overflow = "fold"
        console.out.print(table)
