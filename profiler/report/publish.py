"""Publishing a report into the MkDocs site: stage the page, check it, then install it.

``publish_session`` renders a session's report
(:func:`profiler.report.session_report.write_report`) and
``publish_comparison`` a before/after page
(:func:`profiler.report.compare_page.render`) into a temporary folder, runs
the safety pass (:func:`profiler.report.safety_pass.scrub_tree`) over every
file there, and only then copies the folder to ``docs/findings/<slug>/`` and
updates the findings index and the nav (:mod:`profiler.report.site`). A
failure at any step before the copy leaves the site untouched.

The site's own files live elsewhere: ``mkdocs.yml`` is read and written by
:mod:`profiler.report.mkdocs_yaml`, the shared scripts by
:mod:`profiler.report.site_scripts`, and the build by
:mod:`profiler.report.site_build`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import UsageError
from profiler.report import markdown as md
from profiler.report import redact
from profiler.report.redact import Redaction
from profiler.report.safety_pass import Scrubbed, SessionFacts, scrub_tree
from profiler.report.site import (
    FINDINGS,
    PAGE,
    Entry,
    Site,
    open_site,
    relative,
    update_index,
    update_nav,
)

if TYPE_CHECKING:
    from profiler.analysis.findings import Thresholds
    from profiler.session.summary import Summary


@dataclass(frozen=True, slots=True)
class Published:
    """A page published into a site."""

    slug: str
    title: str
    page: Path
    files: list[Path]
    replaced: bool  # a page of that slug was there (--force)
    index: Path
    nav_updated: bool  # False: mkdocs.yml has no nav (MkDocs then lists every page itself)
    scrubbed: Scrubbed
    redaction: Redaction

    def to_json(self) -> dict[str, Any]:
        """The ``publish --json`` shape; paths relative to the site folder."""
        root = self.index.parent.parent.parent  # docs/findings/index.md -> site
        return {
            "slug": self.slug,
            "title": self.title,
            "page": relative(self.page, root),
            "files": [relative(path, root) for path in self.files],
            "replaced": self.replaced,
            "index": relative(self.index, root),
            "nav_updated": self.nav_updated,
            "redaction": {
                "passwords": True,
                "literals": self.redaction.literals,
                "hosts": self.redaction.hosts,
            },
            "safety_pass": {
                "checked": len(self.scrubbed.checked),
                "rewritten": sorted(p.as_posix() for p in self.scrubbed.rewritten),
                "unchecked": sorted(p.as_posix() for p in self.scrubbed.unchecked),
            },
        }


# -- publishing ----------------------------------------------------------------------------


def publish_session(
    session_dir: Path,
    site_path: Path,
    *,
    title: str | None = None,
    redaction: Redaction | None = None,
    force: bool = False,
    thresholds: Thresholds | None = None,
) -> Published:
    """Publish the report of the session in ``session_dir`` into the site at ``site_path``."""
    from profiler.report.session_report import write_report
    from profiler.session import open as open_session
    from profiler.session.summary import summarize

    site = open_site(site_path)
    session = open_session(session_dir)
    facts = SessionFacts.of([session])
    policy = facts.policy(redaction or Redaction())
    slug = slugify(session.name)
    title = title or session.name
    target = _check_target(site, slug, force=force)
    summary = summarize(session, thresholds)

    # Links to the fix how-tos and the rule reference only where the site has those pages
    # (ours does; a team's own site may not, and a strict build fails on a dead link).
    from profiler.report.lead_section import FIX_PAGES, RULE_REFERENCE

    linked = all((site.docs / page).is_file() for page in {*FIX_PAGES.values(), RULE_REFERENCE})

    def write(staged: Path) -> None:
        write_report(
            session_dir,
            staged,
            thresholds=thresholds,
            redaction=policy,
            docs_prefix="../../" if linked else None,
        )

    scrubbed, files, replaced = _stage(write, slug, target, facts, policy)
    entry = Entry(slug, title, _session_detail(summary, policy))
    return _finish(site, target, entry, files, scrubbed, policy, replaced=replaced)


# Alike publish_session on purpose: the same options (one set of flags for both verbs) and
# the same steps in the same order; the steps themselves are shared (_check_target, _stage,
# _finish), and what lies between them (the sessions, the slug, the page) differs.
def publish_comparison(
    before_dir: Path,
    after_dir: Path,
    site_path: Path,
    *,
    title: str | None = None,
    redaction: Redaction | None = None,
    force: bool = False,
    thresholds: Thresholds | None = None,
) -> Published:
    """Publish a before/after comparison page of two sessions into the site."""
    from profiler.report.compare_page import render
    from profiler.session import open as open_session
    from profiler.session.compare import compare
    from profiler.session.summary import summarize

    site = open_site(site_path)
    before, after = open_session(before_dir), open_session(after_dir)
    facts = SessionFacts.of([before, after])
    policy = facts.policy(redaction or Redaction())
    slug = f"compare-{slugify(before.name)}-vs-{slugify(after.name)}"
    title = title or f"{before.name} vs {after.name}"
    target = _check_target(site, slug, force=force)
    comparison = compare(summarize(before, thresholds), summarize(after, thresholds))

    def write(staged: Path) -> None:
        from profiler.report.compare_plots import write_compare_plots

        staged.mkdir()
        figures = write_compare_plots(comparison, staged)
        links = {
            side: f"../{slugify(session.name)}/"
            for side, session in (("before", before), ("after", after))
            if (site.findings / slugify(session.name) / PAGE).is_file()
        }
        text = render(comparison, title=title, redaction=policy, figures=figures, links=links)
        (staged / PAGE).write_text(text, encoding="utf-8")

    scrubbed, files, replaced = _stage(write, slug, target, facts, policy)
    detail = (
        f"before/after comparison, {_utc(before.started_at)} and {_utc(after.started_at)}; "
        + _verdict_counts(comparison.changes)
    )
    entry = Entry(slug, title, detail)
    return _finish(site, target, entry, files, scrubbed, policy, replaced=replaced)


def _stage(
    write: Callable[[Path], None], slug: str, target: Path, facts: SessionFacts, policy: Redaction
) -> tuple[Scrubbed, list[Path], bool]:
    """Write the page into a staging folder, scrub it, and only then install it in the site:
    a failure (or a leak the scrub refuses) leaves the site as it was."""
    with tempfile.TemporaryDirectory(prefix="profiler-publish-") as tmp:
        staged = Path(tmp) / slug
        write(staged)
        scrubbed = scrub_tree(staged, policy, secrets=facts.secrets, queries=facts.queries)
        files, replaced = _install(staged, target)
    return scrubbed, files, replaced


def _finish(
    site: Site,
    target: Path,
    entry: Entry,
    files: list[Path],
    scrubbed: Scrubbed,
    policy: Redaction,
    *,
    replaced: bool,
) -> Published:
    from profiler.report import site_scripts

    site_scripts.install(site)
    index = update_index(site, entry)
    nav = update_nav(site, entry.title, f"{FINDINGS}/{entry.slug}/{PAGE}")
    return Published(
        entry.slug,
        entry.title,
        target / PAGE,
        files,
        replaced,
        index,
        nav,
        scrubbed,
        policy,
    )


def slugify(name: str) -> str:
    """A folder name for a page: lower case ASCII letters, digits and dashes.

    >>> slugify("Checkout slow (v2.3) / after fix")
    'checkout-slow-v2-3-after-fix'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "session"


def _check_target(site: Site, slug: str, *, force: bool) -> Path:
    target = site.findings / slug
    if target.exists() and not force:
        raise UsageError(
            f"{relative(target, site.root)} is already published",
            hint="pass --force to replace it",
        )
    return target


def _install(staged: Path, target: Path) -> tuple[list[Path], bool]:
    """Copy the checked folder into the site, replacing the old one: the files written, and
    whether an old one was replaced."""
    replaced = target.exists()
    if replaced:
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged, target)
    return sorted(path for path in target.rglob("*") if path.is_file()), replaced


# -- small helpers -------------------------------------------------------------------------


def _session_detail(summary: Summary, redaction: Redaction) -> str:
    session = summary.session
    duration = summary.metrics.duration_seconds
    stopped = " (stopped early)" if session.interrupted else ""
    top = summary.findings[0] if summary.findings else None
    title = md.with_code_spans(redact.inline(redaction, top.title)) if top else ""
    finding = f"{top.severity}: {title}" if top else "no findings"
    return f"{_utc(session.started_at)}, {_duration(duration)}{stopped}. {finding}"


def _verdict_counts(changes: Iterable[Any]) -> str:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.verdict] = counts.get(change.verdict, 0) + 1
    parts = [f"{counts[v]} {v}" for v in ("better", "worse", "same") if counts.get(v)]
    return ", ".join(parts) or "nothing measured"


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
