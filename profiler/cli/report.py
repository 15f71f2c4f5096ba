"""``profiler report``: one session's findings page, plots and flamegraphs, in one folder."""

from __future__ import annotations

from pathlib import Path

import typer

from profiler.cli import console
from profiler.cli.options import IDLE_THRESHOLD_OPTION, JSON_OPTION


def report(
    # typer declarations, alike in shape to other commands' (lint's PATH, mem report's -o):
    # each with the help of this command
    directory: Path = typer.Argument(
        ..., help="A session folder (from session run -o DIR).", show_default=False
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        metavar="OUT",
        help="Folder for index.md and assets/; default: DIR/report.",
        show_default=False,
    ),
    idle_threshold: float = IDLE_THRESHOLD_OPTION,
    force: bool = typer.Option(
        False, "--force", help="Replace the report in a non-empty OUT (its index.md and assets/)."
    ),
    source: Path | None = typer.Option(
        None,
        "--source",
        metavar="PATH",
        help="The gateway's source: add a section of the handlers profiler lint flags, "
        "marked with the hold time this session saw for each.",
        show_default=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a session's findings page (Markdown), its plots and flamegraphs.

    The page reads on its own on GitHub and renders in the MkDocs site
    (profiler publish). Every file stays under 50 MiB: big flamegraphs are
    folded and long series thinned, and the page says so.

    Example: profiler report sessions/before -o reports/before --source app/
    """
    from profiler.analysis.findings import Thresholds
    from profiler.report.session_report import write_report

    out = output if output is not None else directory / "report"
    console.info(f"reading {directory}")
    manifest = write_report(
        directory,
        out,
        thresholds=Thresholds(idle_in_transaction_seconds=idle_threshold),
        force=force,
        source=source,
    )
    if as_json:
        console.print_json(manifest.to_json())
    else:
        console.out.print(str(manifest.page), soft_wrap=True)
    altered = len(manifest.folded) + len(manifest.thinned)
    console.info(
        f"wrote {manifest.page} and {len(manifest.assets)} assets"
        + (f" ({altered} folded or thinned: see the page)" if altered else "")
    )
