"""The safety pass: nothing the session holds that must not leak leaves in a published page.

Every renderer already redacts what it writes; publishing runs this pass over the
staged folder anyway, before anything reaches the site, because a renderer that
writes a value in a form nobody foresaw would otherwise publish it. The pass
(:func:`scrub_tree`) reads every text file (any file that decodes as UTF-8; PNG
plots cannot be read and are counted as unchecked):

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

What the session holds (:class:`SessionFacts`) is read from the sessions
themselves, not from the pages: the pass checks for the values, not for patterns.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from profiler.errors import ChecksFailed, InputError
from profiler.report import redact
from profiler.report.redact import HOST_MASK, Redaction

if TYPE_CHECKING:
    from profiler.session.reader import Session

MIN_SECRET_CHARS = 4
MIN_NUMBER_CHARS = 6
MARKUP_SUFFIXES = frozenset({".svg", ".html", ".htm", ".xml"})
ESCAPED_HOST_MASK = html.escape(HOST_MASK)


# -- what the session knows that must not leak ---------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What the sessions being published hold that a page must not show: passwords (of
    their manifests, command lines and queries), host names, and the captured queries
    (whose literals ``--redact-literals`` removes)."""

    secrets: frozenset[str]
    hosts: frozenset[str]
    queries: tuple[str, ...]

    @classmethod
    def of(cls, sessions: Iterable[Session]) -> SessionFacts:
        """The facts of ``sessions``, read from their manifests and activity."""
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


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """What the safety pass did: files read, files it had to rewrite, files it could not
    read (binary: plots)."""

    checked: list[Path] = field(default_factory=list)
    rewritten: list[Path] = field(default_factory=list)
    unchecked: list[Path] = field(default_factory=list)


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
