"""What a published report must not say: passwords always, literals and hosts when asked.

:class:`Redaction` is handed to the report renderers and to the site
publisher. ``query(text)`` is for SQL text (what ``pg_stat_activity``
captured); ``text(text)`` is for anything else (command lines, DSNs, finding
titles, file contents).

Rules (the reference page ``publish`` documents the same):

* **Passwords, always**, each value becoming ``***``: the password of a URI
  (``scheme://user:PASSWORD@host``, any scheme, SQLAlchemy driver suffixes
  included: everything from the first ``:`` of the user info to the last
  ``@`` before the query, so a raw password holding ``/`` or ``@`` goes too,
  and an ``@`` in the path of a URI with a port can take more than the
  password); libpq ``password=VALUE`` and ``password='quoted \\' value'``
  (quotes kept: ``password='***'``);
  ``PGPASSWORD=VALUE`` and any ``*PASSWORD=``/``*PASSWD=`` variable;
  ``--password VALUE`` flags; JSON/YAML ``"password": "VALUE"``; SQL
  ``PASSWORD 'VALUE'`` (``CREATE/ALTER ROLE``). In SQL (``query``) a string
  literal after the word ``password`` (optionally after ``=``) becomes
  ``'***'`` even when literals are kept, and passwords in other literals and
  in comments are found with the free-text rules.
* **Literals** (``literals=True``, ``query`` only), as ``pg_stat_statements``
  normalises them, but with ``?`` rather than ``$n``: string constants
  (``'...'`` with ``''``, ``E'...'`` with backslash escapes, ``U&'...'``,
  ``N'...'``, ``$tag$...$tag$``), bit strings (``B'...'``, ``X'...'``) and
  numbers (integers, decimals, exponents, ``0x``/``0o``/``0b``, ``_``
  separators). Untouched: identifiers (``t1``, ``"Quoted 42"``), parameters
  (``$1``), operators, keywords (``TRUE``, ``NULL``), comments (``--`` and
  nested ``/* */``, kept as written). A literal cut off by the end of the text
  (``pg_stat_activity`` truncates long queries) is still a literal.
* **Hosts** (``hosts=True``): every host becomes ``<host>``, loopback and
  ``localhost`` included: the host list of a URI authority; libpq ``host=``
  and ``hostaddr=`` values (socket directories too); IPv4 and IPv6 addresses
  (not the unspecified ``::``, which names no host); dotted names whose last
  label is a top-level domain of :data:`TLDS` (a closed list, so ``main.py``
  or ``logger.info`` are not taken for hosts, and a single-label name like
  ``db`` is only found inside a DSN or URL). Names in :data:`PUBLIC_HOSTS`
  (XML namespaces, the plotting library's home page) are kept: they name
  standards, not infrastructure. In SQL, only literals and comments are
  searched: identifiers are never hosts.
  ``known_hosts`` adds names the patterns cannot find (a machine's single-label
  hostname, a DSN's ``db``), masked wherever they stand as a whole word.

Every rule is idempotent: redacting redacted text changes nothing.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

PASSWORD_MASK = "***"  # noqa: S105 - the mask, not a password
HOST_MASK = "<host>"
LITERAL_MASK = "?"

TLDS = frozenset(
    {
        # generic
        *("com", "net", "org", "edu", "gov", "mil", "io", "ai", "cloud", "xyz", "online"),
        *("site", "tech", "biz", "co"),
        # private and special-use names seen in infrastructure
        *("internal", "local", "localdomain", "lan", "intranet", "corp", "home", "arpa"),
        *("example", "invalid", "localhost"),
        # country codes that are not also file extensions or attribute names
        *("uk", "de", "fr", "nl", "eu", "us", "ca", "ch", "se", "jp", "cn", "ru", "br", "au"),
        *("nz", "sg", "kr", "be", "cz", "dk", "fi", "ie", "pt", "za", "mx", "ar", "hk", "tw"),
    }
)
"""Last labels that make a dotted name a host. Closed on purpose: ``app``, ``dev``, ``info``,
``int``, ``id``, ``at``, ``py``, ``sh``, ``md``, ``rs``, ``pl`` and ``so`` are also attribute
names or file extensions, and a report is full of those."""

PUBLIC_HOSTS = frozenset(
    {"www.w3.org", "w3.org", "purl.org", "creativecommons.org", "matplotlib.org"}
)
"""Host names kept by ``hosts=True``: they name standards (SVG and Dublin Core namespaces,
licences) and tools, never a user's infrastructure."""

# -- passwords -----------------------------------------------------------------------------

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_URI_STOP = "\\s\"'<>`"
_URI = re.compile(rf"(?<![A-Za-z0-9+.\-])({_SCHEME})([^{_URI_STOP}]*)")
_QUOTED = r"'(?:[^'\\]|\\.)*'?"
_KV_VALUE = rf"(?:{_QUOTED}|[^\s\"'<>&]+)"
_KV_PASSWORD = re.compile(rf"(?<![\w.])(\w*pass(?:word|wd)\s*=\s*)({_KV_VALUE})", re.IGNORECASE)
_KV_TIGHT_PASSWORD = re.compile(  # libpq and shell style, no space around "=": not SQL's
    rf"(?<![\w.])(\w*pass(?:word|wd)=)(?!\$\d|\?(?![^\s\"'<>&]))({_KV_VALUE})", re.IGNORECASE
)
_FLAG_PASSWORD = re.compile(
    r"(?<![\w.])(--?[\w\-]*pass(?:word|wd)\s+)([^\s\"'<>&\-][^\s\"'<>&]*)", re.IGNORECASE
)
_JSON_PASSWORD = re.compile(
    r"""((?<![\w.])["']?\w*pass(?:word|wd)["']?\s*:(?!:)\s*)("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,}"'<>&]+)""",
    re.IGNORECASE,
)
_SQL_PASSWORD = re.compile(r"(\bpassword\s+)('(?:[^']|'')*'?)", re.IGNORECASE)


def _mask_uri_password(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    query = re.search("[?#]", rest)
    # the last "@" before the query: a raw password may hold "/" or "@"
    at = rest.rfind("@", 0, query.start() if query else len(rest))
    if at < 0:
        at = rest.rfind("@")  # a raw password with "?" or "#" in it
    if at < 0:
        return match.group(0)
    userinfo = rest[:at]
    colon = userinfo.find(":")
    if colon < 0:
        return match.group(0)
    return f"{scheme}{userinfo[:colon]}:{PASSWORD_MASK}{rest[at:]}"


def _mask_value(match: re.Match[str]) -> str:
    """The value masked, its quotes kept (``password='***'`` is still a quoted value)."""
    quote = match.group(2)[:1]
    if quote in ("'", '"'):
        return f"{match.group(1)}{quote}{PASSWORD_MASK}{quote}"
    return match.group(1) + PASSWORD_MASK


def remove_passwords(text: str, *, sql: bool = True) -> str:
    """Every password ``text`` holds, as ``***`` (see the module's rules).

    >>> remove_passwords("postgresql+asyncpg://app:s3cr3t@db:5432/app")
    'postgresql+asyncpg://app:***@db:5432/app'
    >>> remove_passwords("host=db password='a b' user=app PGPASSWORD=x")
    "host=db password='***' user=app PGPASSWORD=***"
    """
    text = _URI.sub(_mask_uri_password, text)
    text = _KV_PASSWORD.sub(_mask_value, text)
    text = _FLAG_PASSWORD.sub(_mask_value, text)
    text = _JSON_PASSWORD.sub(_mask_value, text)
    return _SQL_PASSWORD.sub(_mask_value, text) if sql else text


def _remove_passwords_around_sql(text: str) -> str:
    """The password rules that cannot be SQL (URIs, ``password=x`` without spaces, flags,
    JSON), run over a query before it is lexed: a libpq string or a command line captured
    as a query is not cut apart by the lexer first."""
    text = _URI.sub(_mask_uri_password, text)
    text = _KV_TIGHT_PASSWORD.sub(_mask_value, text)
    text = _FLAG_PASSWORD.sub(_mask_value, text)
    return _JSON_PASSWORD.sub(_mask_value, text)


def passwords(text: str) -> list[str]:
    """The password values ``text`` holds, as written (for leak checks after redaction)."""
    found: list[str] = []
    for match in _URI.finditer(text):
        masked = _mask_uri_password(match)
        if masked != match.group(0):
            userinfo_end = masked.index(PASSWORD_MASK)
            tail = len(masked) - userinfo_end - len(PASSWORD_MASK)
            found.append(match.group(0)[userinfo_end : len(match.group(0)) - tail])
    for pattern in (_KV_PASSWORD, _FLAG_PASSWORD, _JSON_PASSWORD, _SQL_PASSWORD):
        for match in pattern.finditer(text):
            value = match.group(2)
            if value[:1] in "'\"":
                value = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
            found.append(value)
    return [value for value in found if value and value != PASSWORD_MASK]


# -- hosts ---------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_FQDN = re.compile(
    rf"(?<![\w.\-])((?:{_LABEL}\.)+({_LABEL}))\.?(?![\w\-]|\.[\w\-])",
)
_LOCALHOST = re.compile(r"(?<![\w.\-])localhost(?![\w\-]|\.[\w\-])", re.IGNORECASE)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?!\w|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f.]{0,15}){2,8}(?:%\w+)?(?![\w:])")
_KV_HOST = re.compile(rf"(?<![\w.\-])(host(?:addr)?\s*=\s*)({_KV_VALUE})", re.IGNORECASE)


def _mask_uri_hosts(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found >= 0:
            end = min(end, found)
    at = rest.rfind("@", 0, end)
    userinfo = rest[: at + 1]
    entity = re.search("[&;]", rest[at + 1 : end])  # an HTML entity (&quot;) ends the hosts
    if entity:
        end = at + 1 + entity.start()
    hostlist, tail = rest[at + 1 : end], rest[end:]
    hosts = []
    for entry in hostlist.split(","):
        if entry.startswith("["):  # [v6]:port
            close = entry.find("]")
            host, port = (entry, "") if close < 0 else (entry[: close + 1], entry[close + 1 :])
        else:
            host, sep, port = entry.partition(":")
            port = sep + port
        keep = not host or host.lower() in PUBLIC_HOSTS
        hosts.append(entry if keep else HOST_MASK + port)
    return f"{scheme}{userinfo}{','.join(hosts)}{tail}"


def _mask_ipv6(match: re.Match[str]) -> str:
    candidate = match.group(0)
    address = candidate.rstrip(".")
    tail = candidate[len(address) :]
    while re.search(r"[0-9A-Fa-f]", address):
        try:
            ipaddress.IPv6Address(address.split("%", 1)[0])
        except ValueError:
            if address.count(":") < 3:
                return candidate
            address, port = address.rsplit(":", 1)  # a bare address with its :port after it
            tail = f":{port}{tail}"
            continue
        return HOST_MASK + tail
    return candidate


def _mask_fqdn(match: re.Match[str]) -> str:
    name, last = match.group(1), match.group(2)
    if last.lower() not in TLDS or name.lower() in PUBLIC_HOSTS:
        return match.group(0)
    return HOST_MASK + match.group(0)[len(name) :]


def remove_hosts(text: str, known: frozenset[str] | set[str] = frozenset()) -> str:
    """Every host ``text`` names, as ``<host>`` (see the module's rules); ``known`` names
    are masked wherever they stand as a whole word.

    >>> remove_hosts("postgresql://app@db:5432/app from 10.0.0.7 via api.example.com")
    'postgresql://app@<host>:5432/app from <host> via <host>'
    """
    text = _URI.sub(_mask_uri_hosts, text)
    text = _KV_HOST.sub(lambda m: m.group(1) + HOST_MASK, text)
    text = _IPV6.sub(_mask_ipv6, text)
    text = _IPV4.sub(HOST_MASK, text)
    text = _FQDN.sub(_mask_fqdn, text)
    text = _LOCALHOST.sub(HOST_MASK, text)
    names = sorted((name for name in known if len(name) >= 2), key=len, reverse=True)
    if names:
        alternatives = "|".join(re.escape(name) for name in names)
        pattern = rf"(?<![\w.\-])(?:{alternatives})(?![\w\-]|\.[\w\-])"
        text = re.sub(pattern, HOST_MASK, text, flags=re.IGNORECASE)
    return text


# -- SQL -----------------------------------------------------------------------------------

TokenKind = Literal["code", "literal", "comment"]


@dataclass(frozen=True, slots=True)
class Token:
    """A piece of SQL text: ``literal`` (a constant), ``comment``, or ``code`` (the rest)."""

    kind: TokenKind
    text: str


_IDENT_START = re.compile(r"[A-Za-z_\u0080-\U0010ffff]")
_IDENT = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_PARAM = re.compile(r"\$\d+")
_ASCII_DIGIT = re.compile(r"[0-9]")
_NUMBER = re.compile(
    r"0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:\d[\d_]*(?:\.(?!\.)[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?"
)
_STRING_PREFIXES = {"e": "escape", "b": "plain", "x": "plain", "n": "plain"}


def lex(sql: str) -> list[Token]:
    """``sql`` cut into code, literal and comment tokens; joined back, they give ``sql``.

    A small PostgreSQL lexer: enough to tell constants from identifiers,
    parameters, operators and comments, also on text cut off mid-token.

    >>> [t.text for t in lex("SELECT * FROM t1 WHERE a = 'x''y' AND b > 4.5e3 -- n=1")
    ...  if t.kind == "literal"]
    ["'x''y'", '4.5e3']
    """
    tokens: list[Token] = []
    code_start, i = -1, 0
    while i < len(sql):
        kind, end = _scan(sql, i)
        if kind == "code":
            code_start = i if code_start < 0 else code_start
        else:
            if code_start >= 0:
                tokens.append(Token("code", sql[code_start:i]))
                code_start = -1
            tokens.append(Token(kind, sql[i:end]))
        i = end
    if code_start >= 0:
        tokens.append(Token("code", sql[code_start:]))
    return tokens


def _scan(sql: str, i: int) -> tuple[TokenKind, int]:  # noqa: PLR0911 - one return per kind
    """The kind of the token starting at ``i``, and the index just past it."""
    char = sql[i]
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return "comment", len(sql) if end < 0 else end
    if sql.startswith("/*", i):
        return "comment", _block_comment_end(sql, i)
    if char == "'":
        return "literal", _string_end(sql, i + 1, backslashes=False)
    if char == '"':
        return "code", _quoted_identifier_end(sql, i + 1)
    if char == "$":
        return _scan_dollar(sql, i)
    if _IDENT_START.match(char):
        return _scan_word(sql, i)
    # ASCII digits only: str.isdigit() is also true of "²", which no SQL number starts with
    if _ASCII_DIGIT.match(char) or (
        char == "." and _ASCII_DIGIT.match(sql[i + 1 : i + 2]) and sql[i - 1 : i] != "."
    ):
        number = _NUMBER.match(sql, i)
        assert number is not None
        return "literal", number.end()
    return "code", i + 1


def _scan_dollar(sql: str, i: int) -> tuple[TokenKind, int]:
    """``$1`` (a parameter), ``$tag$...$tag$`` (a constant), or a lone ``$``."""
    param = _PARAM.match(sql, i)
    if param:
        return "code", param.end()
    tag = _DOLLAR_TAG.match(sql, i)
    if not tag:
        return "code", i + 1
    close = sql.find(tag.group(0), tag.end())
    return "literal", len(sql) if close < 0 else close + len(tag.group(0))


def _scan_word(sql: str, i: int) -> tuple[TokenKind, int]:
    """An identifier or keyword, or the prefix of a string (``E'``, ``B'``, ``X'``, ``N'``,
    ``U&'``) or of a quoted identifier (``U&"``)."""
    word = _IDENT.match(sql, i)
    assert word is not None
    end = word.end()
    prefix = word.group(0).lower()
    if sql.startswith("'", end) and prefix in _STRING_PREFIXES:
        escape = _STRING_PREFIXES[prefix] == "escape"
        return "literal", _string_end(sql, end + 1, backslashes=escape)
    if prefix == "u" and sql.startswith("&'", end):
        return "literal", _string_end(sql, end + 2, backslashes=False)
    if prefix == "u" and sql.startswith('&"', end):
        return "code", _quoted_identifier_end(sql, end + 2)
    return "code", end


def _string_end(sql: str, i: int, *, backslashes: bool) -> int:
    """Index just past the quote closing a string whose body starts at ``i``; the end of
    ``sql`` when it is cut off. Adjacent ``''`` is a quote, in every kind of string."""
    n = len(sql)
    while i < n:
        char = sql[i]
        if backslashes and char == "\\":
            i += 2
        elif char == "'":
            if i + 1 < n and sql[i + 1] == "'":
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _quoted_identifier_end(sql: str, i: int) -> int:
    n = len(sql)
    while i < n:
        if sql[i] == '"':
            if i + 1 < n and sql[i + 1] == '"':
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _block_comment_end(sql: str, i: int) -> int:
    depth, n = 0, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def literals(sql: str) -> list[str]:
    """The constants of ``sql`` as written (quotes and prefixes included)."""
    return [token.text for token in lex(sql) if token.kind == "literal"]


def _after_password(tokens: list[Token], index: int) -> bool:
    """Whether the literal at ``index`` is the value of a ``password`` (``PASSWORD 'x'``,
    ``password = 'x'``)."""
    if index == 0 or tokens[index - 1].kind != "code":
        return False
    before = tokens[index - 1].text.rstrip()
    before = before[:-1].rstrip() if before.endswith("=") else before
    return re.search(r"(?<![\w$])password$", before, re.IGNORECASE) is not None


# -- the policy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redaction:
    """What to remove besides passwords (always removed). See the module's rules."""

    literals: bool = False
    hosts: bool = False
    known_hosts: frozenset[str] = frozenset()
    """With ``hosts``: names to mask wherever they stand as a whole word, even without a dot
    (the recording machine's hostname, a DSN's ``db``): what the patterns cannot find."""

    def query(self, text: str) -> str:
        """SQL text as it may be published.

        >>> Redaction(literals=True).query("SELECT * FROM t1 WHERE id = 42 AND s = E'a\\\\'b'")
        'SELECT * FROM t1 WHERE id = ? AND s = ?'
        """
        tokens = lex(_remove_passwords_around_sql(text))
        parts: list[str] = []
        for index, token in enumerate(tokens):
            if token.kind == "literal":
                if self.literals:
                    parts.append(LITERAL_MASK)
                elif token.text.startswith("'") and _after_password(tokens, index):
                    parts.append(f"'{PASSWORD_MASK}'")
                else:
                    parts.append(self._free(token.text, sql=False))
            elif token.kind == "comment":
                parts.append(self._free(token.text))
            else:
                parts.append(token.text)
        return _URI.sub(_mask_uri_password, "".join(parts))

    def text(self, text: str) -> str:
        """Any other text (command lines, DSNs, titles, file contents) as it may be published.

        >>> Redaction(hosts=True).text("gunicorn --bind 10.1.2.3:8000; PGPASSWORD=x psql")
        'gunicorn --bind <host>:8000; PGPASSWORD=*** psql'
        """
        return self._free(text)

    def _free(self, text: str, *, sql: bool = True) -> str:
        text = remove_passwords(text, sql=sql)
        return remove_hosts(text, self.known_hosts) if self.hosts else text


_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_SQL_START = re.compile(
    r"\s*(?:select|insert|update|delete|merge|with|values|table|call|copy|begin|start|commit|"
    r"rollback|end|abort|savepoint|release|set|reset|show|alter|create|drop|truncate|lock|"
    r"explain|do|fetch|declare|close|prepare|execute|deallocate|listen|notify|vacuum|analyze|"
    r"grant|revoke|comment|refresh)\b",
    re.IGNORECASE,
)


def inline(redaction: Redaction, text: str) -> str:
    """Markdown inline text (a finding's title): code spans that hold SQL go through
    :meth:`Redaction.query`, everything else through :meth:`Redaction.text`.

    >>> inline(Redaction(literals=True), "`UPDATE t SET x = 5 ...` held on db.example.com")
    '`UPDATE t SET x = ? ...` held on db.example.com'
    """
    parts: list[str] = []
    last = 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(redaction.text(text[last : match.start()]))
        body = match.group(2)
        redacted = redaction.query(body) if _SQL_START.match(body) else redaction.text(body)
        parts.append(f"{match.group(1)}{redacted}{match.group(1)}")
        last = match.end()
    parts.append(redaction.text(text[last:]))
    return "".join(parts)
