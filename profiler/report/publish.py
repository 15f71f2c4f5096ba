"""Publishing a report into the MkDocs site: the page, the findings index, the nav.

``publish_session`` renders a session's report
(:func:`profiler.report.session_report.write_report`) and
``publish_comparison`` a before/after page
(:func:`profiler.report.compare_page.render`) into a temporary folder, runs
the safety pass over every file there, and only then copies the folder to
``docs/findings/<slug>/`` and updates ``docs/findings/index.md`` (an entry
after the :data:`MARKER` line) and ``mkdocs.yml`` (an entry under the last
top-level ``Findings`` section). A failure at any step before the copy leaves
the site untouched.

The safety pass (:func:`scrub_tree`) reads every text file (any file that
decodes as UTF-8; PNG plots cannot be read and are counted as unchecked):

1. it redacts again with the same :class:`~profiler.report.redact.Redaction`
   (passwords always; hosts when asked, as ``&lt;host&gt;`` in SVG, HTML and
   Markdown prose, so the mask stays visible and the markup valid);
2. it fails (:class:`~profiler.errors.ChecksFailed`, exit 1: a check found
   violations) when a password the session holds (in its manifest, its
   targets' command lines, its captured queries), at least
   :data:`MIN_SECRET_CHARS` long, still appears; and, with
   ``literals=True``, when a literal of the captured queries still appears:
   a string literal as written, quotes included (or HTML-escaped), a number
   of at least :data:`MIN_NUMBER_CHARS` characters as a whole token. Shorter
   values are everywhere on a page (``1``, ``'a'``, axis ticks) and are left
   to the renderers' redaction. The message names the file and the kind of
   value, never the value.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from profiler.errors import ChecksFailed, InputError, ToolMissingError, UsageError
from profiler.report import markdown as md
from profiler.report import redact
from profiler.report.redact import HOST_MASK, Redaction

if TYPE_CHECKING:
    from profiler.analysis.findings import Thresholds
    from profiler.session.reader import Session
    from profiler.session.summary import Summary

MARKER = "<!-- findings-index -->"
FINDINGS = "findings"
PAGE = "index.md"
INDEX_PAGE = f"{FINDINGS}/{PAGE}"
NAV_SECTION = "Findings"
MIN_SECRET_CHARS = 4
MIN_NUMBER_CHARS = 6
MARKUP_SUFFIXES = frozenset({".svg", ".html", ".htm", ".xml"})
ESCAPED_HOST_MASK = html.escape(HOST_MASK)
INDEX_TEMPLATE = f"# Findings\n\nPublished profiling reports, newest first.\n\n{MARKER}\n"


# -- the site ------------------------------------------------------------------------------


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
    settings = _load_config(config)
    docs = path / str(settings.get("docs_dir") or "docs")
    if not docs.is_dir():
        raise UsageError(f"{docs} does not exist", hint="create it, or set docs_dir in mkdocs.yml")
    return Site(path, config, docs)


# -- what was published --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """What the safety pass did: files read, files it had to rewrite, files it could not
    read (binary: plots)."""

    checked: list[Path] = field(default_factory=list)
    rewritten: list[Path] = field(default_factory=list)
    unchecked: list[Path] = field(default_factory=list)


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
            "page": _relative(self.page, root),
            "files": [_relative(path, root) for path in self.files],
            "replaced": self.replaced,
            "index": _relative(self.index, root),
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


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the findings index."""

    slug: str
    title: str
    detail: str  # Markdown after the link

    def line(self) -> str:
        return f"- [{md.escape(self.title)}]({self.slug}/{PAGE}): {self.detail}"


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
    facts = _SessionFacts.of([session])
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
    facts = _SessionFacts.of([before, after])
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
    write: Callable[[Path], None], slug: str, target: Path, facts: _SessionFacts, policy: Redaction
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
            f"{_relative(target, site.root)} is already published",
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


# -- what the session knows that must not leak ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _SessionFacts:
    secrets: frozenset[str]
    hosts: frozenset[str]
    queries: tuple[str, ...]

    @classmethod
    def of(cls, sessions: Iterable[Session]) -> _SessionFacts:
        secrets: set[str] = set()
        hosts: set[str] = set()
        queries: set[str] = set()
        for session in sessions:
            texts = [_manifest_text(session)]
            activity = session.activity
            for column in ("query", "owner_cmdline"):
                if column in activity.columns:
                    texts += [str(v) for v in activity[column].dropna().unique().tolist()]
            if "query" in activity.columns:
                queries.update(str(v) for v in activity["query"].dropna().unique().tolist())
            for column in ("client_hostname", "client_addr"):
                if column in activity.columns:
                    hosts.update(str(v) for v in activity[column].dropna().unique().tolist())
            for text in texts:
                secrets.update(redact.passwords(text))
            hosts.update(_manifest_hosts(session.manifest))
        return cls(
            frozenset(s for s in secrets if len(s) >= MIN_SECRET_CHARS),
            frozenset(h for h in hosts if h and not h.startswith("/")),
            tuple(sorted(queries)),
        )

    def policy(self, redaction: Redaction) -> Redaction:
        """``redaction``, knowing the session's host names when it masks hosts."""
        if not redaction.hosts:
            return redaction
        return replace(redaction, known_hosts=redaction.known_hosts | self.hosts)


def _manifest_text(session: Session) -> str:
    try:
        return (session.path / "manifest.json").read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {session.path / 'manifest.json'}: {exc}") from None


def _manifest_hosts(manifest: dict[str, Any]) -> set[str]:
    """The recording machine's name and every host of the session's DSN."""
    hosts: set[str] = set()
    machine = (manifest.get("host") or {}).get("hostname")
    if isinstance(machine, str):
        hosts.add(machine)
    dsn = manifest.get("dsn")
    if isinstance(dsn, str):
        hosts.update(_dsn_hosts(dsn))
    return hosts


def _dsn_hosts(dsn: str) -> set[str]:
    if "://" not in dsn:
        found = re.findall(r"\bhost(?:addr)?\s*=\s*('[^']*'|\S+)", dsn)
        return {value.strip("'") for value in found for value in value.strip("'").split(",")}
    netloc = urlsplit(dsn.strip()).netloc.rsplit("@", 1)[-1]
    hosts = set()
    for entry in netloc.split(","):
        host = entry[1:].split("]")[0] if entry.startswith("[") else entry.split(":")[0]
        if host:
            hosts.add(host)
    return hosts


# -- the safety pass -----------------------------------------------------------------------


def scrub_tree(
    directory: Path,
    redaction: Redaction,
    *,
    secrets: Iterable[str] = (),
    queries: Iterable[str] = (),
) -> Scrubbed:
    """Redact every text file under ``directory`` again, then check nothing leaked.

    ChecksFailed (exit 1) naming the file when a password of ``secrets``, or
    with ``redaction.literals`` a literal of ``queries``, is still there.
    """
    scrubbed = Scrubbed()
    needles = _secret_forms(secrets)
    literal_checks = _literal_checks(queries) if redaction.literals else []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory)
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, ValueError):
            scrubbed.unchecked.append(name)
            continue
        clean = scrub_text(text, path.suffix.lower(), redaction)
        if clean != text:
            path.write_text(clean, encoding="utf-8")
            scrubbed.rewritten.append(name)
        scrubbed.checked.append(name)
        if any(needle in clean for needle in needles):
            raise ChecksFailed(
                f"{name} still holds a password of the session after redaction; "
                "nothing was published",
                hint="report this as a bug (the renderer wrote it in a form not recognised)",
            )
        for kind, check in literal_checks:
            if check(clean):
                raise ChecksFailed(
                    f"{name} still shows a {kind} literal of the captured queries after "
                    "--redact-literals; nothing was published",
                    hint="report this as a bug (a renderer skipped the query redaction)",
                )
    return scrubbed


def scrub_text(text: str, suffix: str, redaction: Redaction) -> str:
    """One file's text redacted, the host mask escaped where markup would swallow it."""
    if suffix == ".md":
        return "".join(
            redaction.text(part) if code else _escape_mask(redaction.text(part))
            for code, part in markdown_segments(text)
        )
    clean = redaction.text(text)
    return _escape_mask(clean) if suffix in MARKUP_SUFFIXES else clean


def _escape_mask(text: str) -> str:
    return text.replace(HOST_MASK, ESCAPED_HOST_MASK)


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\2[`~]*[ \t]*$|\Z)", re.M | re.S)
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.S)


def markdown_segments(text: str) -> Iterator[tuple[bool, str]]:
    """``text`` as (is code, part) pieces: fenced blocks and inline code spans are code.

    >>> list(markdown_segments("a `b` c"))
    [(False, 'a '), (True, '`b`'), (False, ' c')]
    """
    last = 0
    for fence in _FENCE.finditer(text):
        yield from _inline_segments(text[last : fence.start()])
        yield True, fence.group(0)
        last = fence.end()
    yield from _inline_segments(text[last:])


def _inline_segments(text: str) -> Iterator[tuple[bool, str]]:
    last = 0
    for span in _CODE_SPAN.finditer(text):
        if span.start() > last:
            yield False, text[last : span.start()]
        yield True, span.group(0)
        last = span.end()
    if last < len(text):
        yield False, text[last:]


def _forms(value: str) -> set[str]:
    """``value`` as a page may show it: raw, HTML-escaped (either quote style), as XML
    character references of non-ASCII characters."""
    escaped = html.escape(value, quote=True)
    forms = {
        value,
        escaped,
        escaped.replace("&#x27;", "&#39;"),
        escaped.replace("&#x27;", "&apos;"),
    }
    forms |= {form.encode("ascii", "xmlcharrefreplace").decode("ascii") for form in set(forms)}
    return forms


def _secret_forms(secrets: Iterable[str]) -> set[str]:
    return {form for secret in secrets for form in _forms(secret)}


def _literal_checks(queries: Iterable[str]) -> list[tuple[str, Any]]:
    strings: set[str] = set()
    numbers: set[str] = set()
    for query in queries:
        for literal in redact.literals(query):
            if literal[:1].isdigit() or literal[:1] == ".":
                if len(literal) >= MIN_NUMBER_CHARS:
                    numbers.add(literal)
            elif literal.endswith(("'", "$")) and len(literal) > 2:  # complete, not empty
                strings.add(literal)
    checks: list[tuple[str, Any]] = []
    string_forms = {form for literal in strings for form in _forms(literal)}
    if string_forms:
        checks.append(("string", lambda text: any(form in text for form in string_forms)))
    if numbers:
        pattern = re.compile(
            r"(?<![\w.])(?:" + "|".join(map(re.escape, sorted(numbers))) + r")(?![\w]|\.\d)"
        )
        checks.append(("number", lambda text: pattern.search(text) is not None))
    return checks


# -- the findings index and the nav --------------------------------------------------------


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
            f"{_relative(path, site.root)} has no {MARKER} line",
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
    _write_atomic(path, "\n".join(rebuilt) + "\n")
    return path


def update_nav(site: Site, title: str, page: str) -> bool:
    """Add ``title: page`` under the top-level ``Findings`` entry of the nav (created, and
    kept last); re-publishing replaces the entry of ``page``. False when there is no nav."""
    settings = _load_config(site.config)
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
    _write_atomic(site.config, _dump_config(settings))
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


# -- mkdocs.yml: PyYAML, keeping the tags MkDocs uses (!ENV, !!python/name:...) ------------


@dataclass(frozen=True, slots=True)
class _Tagged:
    tag: str
    value: Any
    kind: str  # scalar, sequence, mapping


def _yaml() -> Any:
    """PyYAML (a dependency of MkDocs), untyped: no stubs are installed for it."""
    import importlib

    return importlib.import_module("yaml")


@lru_cache(maxsize=1)
def _yaml_classes() -> tuple[Any, Any]:
    """A safe loader that keeps unknown tags (``!ENV``, ``!!python/name:...``) as
    :class:`_Tagged`, and a safe dumper that writes them back."""
    yaml = _yaml()
    loader: Any = type("TagKeepingLoader", (yaml.SafeLoader,), {})
    dumper: Any = type("TagKeepingDumper", (yaml.SafeDumper,), {})

    def construct(load: Any, node: Any) -> _Tagged:
        if isinstance(node, yaml.ScalarNode):
            return _Tagged(node.tag, load.construct_scalar(node), "scalar")
        if isinstance(node, yaml.SequenceNode):
            return _Tagged(node.tag, load.construct_sequence(node, deep=True), "sequence")
        return _Tagged(node.tag, load.construct_mapping(node, deep=True), "mapping")

    def represent(dump: Any, data: _Tagged) -> Any:
        if data.kind == "scalar":
            return dump.represent_scalar(data.tag, data.value)
        if data.kind == "sequence":
            return dump.represent_sequence(data.tag, data.value)
        return dump.represent_mapping(data.tag, data.value)

    loader.add_constructor(None, construct)
    dumper.add_representer(_Tagged, represent)
    return loader, dumper


def _load_config(path: Path) -> dict[str, Any]:
    yaml = _yaml()
    loader, _ = _yaml_classes()
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint="fix mkdocs.yml") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a YAML mapping", hint="fix mkdocs.yml")
    return data


def _dump_config(settings: dict[str, Any]) -> str:
    _, dumper = _yaml_classes()
    text = _yaml().dump(
        settings, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return str(text)


# -- building the site ---------------------------------------------------------------------


def build_site(
    site_path: Path, *, timeout: float = 600, env: Mapping[str, str] | None = None
) -> Path:
    """``mkdocs build --strict`` of the site at ``site_path`` (with this interpreter's
    MkDocs); the folder built (``site_dir``, default ``site/``). ``env``: variables added
    for the build (the demo names its sessions for the notebook pages).

    ToolMissingError (exit 5) without MkDocs; ChecksFailed (exit 1) when the
    strict build fails, with MkDocs' last warning or error.
    """
    import importlib.util
    import subprocess
    import sys

    site = open_site(site_path)
    if importlib.util.find_spec("mkdocs") is None:
        raise ToolMissingError(
            "mkdocs is not installed", hint="pip install mkdocs-material (a profiler dependency)"
        )
    settings = _load_config(site.config)
    built = site.root / str(settings.get("site_dir") or "site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built.resolve())],
        cwd=site.root,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        problems = [
            line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))
        ]
        last = problems[-1] if problems else (done.stderr.strip().splitlines() or ["?"])[-1]
        raise ChecksFailed(
            f"mkdocs build --strict failed: {last}",
            hint=f"run `mkdocs build --strict` in {site.root} to see every message",
        )
    return built


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


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
