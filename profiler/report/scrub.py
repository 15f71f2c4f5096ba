"""Every text a page shows passes here: the caller's redaction, then our password mask."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from profiler.report.redact import Redaction

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
_KEY_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z_]*pass(?:word|wd)?\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)",
    re.IGNORECASE,
)
_FLAG_PASSWORD = re.compile(r"(?P<head>--password\s+)\S+", re.IGNORECASE)
_SQL_PASSWORD = re.compile(r"(?P<head>\bpassword\s+)'(?:[^']|'')*'", re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """``text`` with every password we can recognise replaced by ``***``: in URLs
    (``scheme://user:secret@``), ``key=value`` pairs (``password=``, ``PGPASSWORD=``),
    ``--password X`` and SQL's ``PASSWORD '...'``.

    >>> mask_passwords("gunicorn app --db postgresql+asyncpg://app:s3cret@db:5432/app")
    'gunicorn app --db postgresql+asyncpg://app:***@db:5432/app'
    >>> mask_passwords("PGPASSWORD=s3cret host=db password='a b' user=app")
    'PGPASSWORD=*** host=db password=*** user=app'
    >>> mask_passwords("ALTER ROLE app PASSWORD 'x''y'")
    "ALTER ROLE app PASSWORD '***'"
    """
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    text = _KEY_PASSWORD.sub(r"\g<head>***", text)
    text = _FLAG_PASSWORD.sub(r"\g<head>***", text)
    return _SQL_PASSWORD.sub(r"\g<head>'***'", text)


class Scrub:
    """The one place page text passes through: the caller's redaction, then our password mask
    (so a redaction that forgot a pattern still cannot leak a password)."""

    def __init__(self, redaction: Redaction | None) -> None:
        self.redaction = redaction

    def query(self, text: str) -> str:
        redacted = self.redaction.query(text) if self.redaction is not None else text
        return mask_passwords(redacted)

    def text(self, text: str) -> str:
        redacted = self.redaction.text(text) if self.redaction is not None else text
        return mask_passwords(redacted)

    def title(self, text: str) -> str:
        """A finding's title: its backticked spans are queries (``stuck-query``), the rest text."""
        parts = text.split("`")
        return "`".join(
            self.query(part) if index % 2 else self.text(part) for index, part in enumerate(parts)
        )
