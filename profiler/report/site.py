"""The MkDocs site a report is published into, and the two edits publishing makes to it.

A site is a folder with ``mkdocs.yml`` and its ``docs_dir``. Publishing adds a
page under ``docs/findings/<slug>/`` and then edits two shared files: the
findings index ``docs/findings/index.md`` (an entry right after the
:data:`MARKER` line, newest first) and the ``nav`` of ``mkdocs.yml`` (an entry
under the last top-level ``Findings`` section). Both edits replace the entry of
a page published again, so publishing twice leaves one entry, and both write
atomically, so an interrupted publish never leaves a half-written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.errors import UsageError
from profiler.report import markdown as md
from profiler.report.mkdocs_yaml import dump_config, load_config

MARKER = "<!-- findings-index -->"
FINDINGS = "findings"
PAGE = "index.md"
INDEX_PAGE = f"{FINDINGS}/{PAGE}"
NAV_SECTION = "Findings"
INDEX_TEMPLATE = f"# Findings\n\nPublished profiling reports, newest first.\n\n{MARKER}\n"


@dataclass(frozen=True, slots=True)
class Site:
    """A MkDocs project: ``mkdocs.yml`` and its ``docs_dir``."""

    root: Path
    config: Path
    docs: Path

    @property
    def findings(self) -> Path:
        return self.docs / FINDINGS


def open_site(path: Path) -> Site:
    """The site in folder ``path``; UsageError (exit 2) when it is not one."""
    config = path / "mkdocs.yml"
    if not config.is_file():
        raise UsageError(
            f"{path} is not a MkDocs site: no mkdocs.yml",
            hint="run from the site's folder or pass --site PATH (the folder with mkdocs.yml)",
        )
    settings = load_config(config)
    docs = path / str(settings.get("docs_dir") or "docs")
    if not docs.is_dir():
        raise UsageError(f"{docs} does not exist", hint="create it, or set docs_dir in mkdocs.yml")
    return Site(path, config, docs)


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the findings index."""

    slug: str
    title: str
    detail: str  # Markdown after the link

    def line(self) -> str:
        return f"- [{md.escape(self.title)}]({self.slug}/{PAGE}): {self.detail}"


def update_index(site: Site, entry: Entry) -> Path:
    """Insert (or replace) ``entry`` in ``docs/findings/index.md``, right after the marker.

    The index is created when missing; UsageError when it exists without the marker.
    """
    path = site.findings / PAGE
    text = path.read_text(encoding="utf-8") if path.exists() else INDEX_TEMPLATE
    lines = text.splitlines()
    try:
        at = next(i for i, line in enumerate(lines) if line.strip() == MARKER)
    except StopIteration:
        raise UsageError(
            f"{relative(path, site.root)} has no {MARKER} line",
            hint="add that line where the list of published findings should go",
        ) from None
    end = at + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("- ")):
        end += 1
    entries = [line for line in lines[at + 1 : end] if line.startswith("- ")]
    link = f"]({entry.slug}/{PAGE})"
    existing = next((i for i, line in enumerate(entries) if link in line), None)
    if existing is None:
        entries.insert(0, entry.line())
    else:
        entries[existing] = entry.line()
    tail = lines[end:]
    rebuilt = [*lines[: at + 1], "", *entries, *([""] if tail else []), *tail]
    write_atomic(path, "\n".join(rebuilt) + "\n")
    return path


def update_nav(site: Site, title: str, page: str) -> bool:
    """Add ``title: page`` under the top-level ``Findings`` entry of the nav (created, and
    kept last); re-publishing replaces the entry of ``page``. False when there is no nav."""
    settings = load_config(site.config)
    nav = settings.get("nav")
    if nav is None:
        return False
    if not isinstance(nav, list):
        raise UsageError(f"{site.config}: nav is not a list", hint="fix mkdocs.yml")
    rest = [item for item in nav if not _is_section(item)]
    entry = {title: page}
    children: list[Any] = []
    for child in _children(nav):
        target = _nav_target(child)
        if target == page and entry not in children:
            children.append(entry)  # replaced in place: re-publishing keeps the order
        elif target not in (page, INDEX_PAGE):
            children.append(child)
    if entry not in children:
        children.append(entry)
    settings["nav"] = [*rest, {NAV_SECTION: [INDEX_PAGE, *children]}]
    write_atomic(site.config, dump_config(settings))
    return True


def _is_section(item: Any) -> bool:
    return isinstance(item, dict) and len(item) == 1 and NAV_SECTION in item


def _children(nav: list[Any]) -> list[Any]:
    """The entries of every top-level Findings section (normally one), in order."""
    found: list[Any] = []
    for item in nav:
        if _is_section(item):
            children = item[NAV_SECTION]
            found += children if isinstance(children, list) else [children]
    return found


def _nav_target(child: Any) -> Any:
    if isinstance(child, dict) and len(child) == 1:
        return next(iter(child.values()))
    return child


def relative(path: Path, root: Path) -> str:
    """``path`` as messages and ``publish --json`` show it: relative to ``root`` when inside."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a sibling file, then rename it over ``path``: all or nothing."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
