"""``profiler publish``: a session's report, or a before/after comparison, into the MkDocs site."""

from __future__ import annotations

from pathlib import Path

import typer

from profiler.cli import console
from profiler.cli.options import JSON_OPTION


def publish(
    directory: Path | None = typer.Argument(
        None, metavar="DIR", help="The session folder to publish.", show_default=False
    ),
    compare: tuple[Path, Path] | None = typer.Option(
        None,
        "--compare",
        metavar="BEFORE AFTER",
        help="Publish a before/after comparison of two session folders instead.",
        show_default=False,
    ),
    site: Path = typer.Option(
        Path(), "--site", help="The site folder (mkdocs.yml and docs/).", show_default="."
    ),
    title: str | None = typer.Option(
        None, "--title", help="Title in the nav and the findings index (default: session name)."
    ),
    redact_literals: bool = typer.Option(
        False, "--redact-literals", help="Replace every SQL string and number literal by ?."
    ),
    redact_hosts: bool = typer.Option(
        False, "--redact-hosts", help="Replace host names and IP addresses by <host>."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a page already published."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish a session's report into the MkDocs site: page, findings index and nav.

    Passwords are always removed; a final pass re-checks every published file.

    Example: profiler publish sessions/before --site . --title "Checkout, before" --redact-literals
    """
    from profiler.errors import UsageError
    from profiler.report.publish import publish_comparison, publish_session
    from profiler.report.redact import Redaction

    redaction = Redaction(literals=redact_literals, hosts=redact_hosts)
    if compare is not None and directory is not None:
        raise UsageError(
            "pass either a session folder or --compare BEFORE AFTER, not both",
            hint="profiler publish --compare sessions/before sessions/after",
        )
    if compare is not None:
        before, after = compare
        published = publish_comparison(
            before, after, site, title=title, redaction=redaction, force=force
        )
    elif directory is not None:
        published = publish_session(directory, site, title=title, redaction=redaction, force=force)
    else:
        raise UsageError(
            "nothing to publish", hint="profiler publish SESSION_DIR, or --compare BEFORE AFTER"
        )
    if as_json:
        console.print_json(published.to_json())
        return
    rewritten = published.scrubbed.rewritten
    if rewritten:
        console.detail(f"safety pass rewrote: {', '.join(p.as_posix() for p in rewritten)}")
    action = "replaced" if published.replaced else "published"
    console.info(
        f"{action} {published.page} ({len(published.files)} files, "
        f"{len(published.scrubbed.checked)} checked); indexed in {published.index}"
        + ("" if published.nav_updated else " (mkdocs.yml has no nav: not listed there)")
    )
