"""Quantities as every page, table, finding and message prints them: one place, one convention.

Why one module: the same value used to print as ``50 MiB`` in a finding and ``50.0 MiB`` on
the memory page, and a reader comparing the two could not tell whether they differed. Pure
(no I/O, no clock), so :mod:`profiler.analysis` may use it and a session reads the same on
any machine.

The conventions:

* bytes: binary units, three significant digits (``512 B``, ``1.50 KiB``, ``50.0 MiB``,
  ``140 MiB``), as memray prints them;
* seconds: a number and `` s``; :func:`duration` switches to minutes for long spans;
* shares: whole percents, keeping the digits a small share needs (``12%``, ``0.1%``);
* changes and offsets: always signed, never ``+-``.
"""

from __future__ import annotations

KIB = 2**10
MIB = 2**20
GIB = 2**30


def size(value: float) -> str:
    """Bytes in binary units, three significant digits.

    >>> size(512), size(1536), size(52428801), size(140 * MIB), size(5 * GIB), size(-3 * MIB)
    ('512 B', '1.50 KiB', '50.0 MiB', '140 MiB', '5.00 GiB', '-3.00 MiB')
    """
    if abs(value) < KIB:
        return f"{value:.0f} B"
    unit = "KiB"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= KIB
        if abs(value) < KIB or unit == "TiB":
            break
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {unit}"


def number(value: float) -> str:
    """Two significant digits, at most one decimal over 1, none over 10: prose, not tables.

    >>> number(0.25), number(3.21), number(3.0), number(42.4), number(0.0)
    ('0.25', '3.2', '3', '42', '0')
    """
    if abs(value) >= 10:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def seconds(value: float, digits: int | None = None) -> str:
    """Seconds: as :func:`number` in prose; with ``digits``, fixed decimals (table columns).

    >>> seconds(0.25), seconds(42.4), seconds(6.5, 1), seconds(300, 0)
    ('0.25 s', '42 s', '6.5 s', '300 s')
    """
    return f"{number(value) if digits is None else f'{value:.{digits}f}'} s"


def duration(value: float) -> str:
    """A span (a session, a capture): seconds, minutes from two minutes on.

    >>> duration(10.5), duration(12.0), duration(150)
    ('10.5 s', '12 s', '2.5 min')
    """
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s".replace(".0 s", " s")


def age(value: float) -> str:
    """A compact age for a narrow column: ``45s``, ``12m``, ``3.5h``.

    >>> age(45), age(720), age(12600)
    ('45s', '12m', '3.5h')
    """
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def percent(share: float, digits: int | None = None) -> str:
    """A share (0..1) as a percent: whole percents, small shares keep their digits; with
    ``digits``, fixed decimals (table columns).

    >>> percent(0.1234), percent(0.053), percent(0.05), percent(0.001), percent(0.0)
    ('12%', '5.3%', '5%', '0.1%', '0%')
    >>> percent(0.1234, 1)
    '12.3%'
    """
    value = share * 100
    if digits is not None:
        return f"{value:.{digits}f}%"
    if value == 0 or abs(value) >= 10:
        return f"{value:.0f}%"
    if abs(value) >= 1:
        return f"{value:.1f}%".replace(".0%", "%")
    return f"{value:.2g}%"


def change(before: float | None, after: float | None) -> str:
    """After against before, signed: ``+25%``, ``-40%``; ``new`` from nothing, ``-`` unknown.

    >>> change(4, 5), change(5, 3), change(0, 0), change(0, 2), change(None, 1)
    ('+25%', '-40%', '0%', 'new', '-')
    """
    if before is None or after is None:
        return "-"
    if before == 0:
        return "0%" if after == 0 else "new"
    return f"{(after - before) / abs(before):+.0%}"


def offset(value: float, *, unit: str = "s", digits: int | None = 1) -> str:
    """A time relative to the session's start, signed: a transaction that began before the
    session started is ``-14.9s``, never ``+-14.9s``. ``digits=None``: as :func:`number`.

    >>> offset(8.54), offset(-14.93), offset(-0.01), offset(2.0, unit=" s")
    ('+8.5s', '-14.9s', '+0.0s', '+2.0 s')
    >>> offset(42.0, unit=" s", digits=None), offset(-0.001, digits=None)
    ('+42 s', '+0s')
    """
    text = number(abs(value)) if digits is None else f"{abs(round(value, digits)):.{digits}f}"
    negative = value < 0 and text.strip("0.") != ""
    return f"{'-' if negative else '+'}{text}{unit}"


def rate(value: float, unit: str) -> str:
    """A per-unit measure (``req/s``, ``s``, a count): two decimals for a float.

    >>> rate(2.5, "req/s"), rate(3, "transactions"), rate(0.5, "")
    ('2.50 req/s', '3 transactions', '0.50')
    """
    text = f"{value:.2f}" if isinstance(value, float) else f"{value}"
    return f"{text} {unit}" if unit else text


def measure(value: float | None, unit: str) -> str:
    """A measure's value by its unit: bytes as :func:`size`, else :func:`rate`; ``-`` unknown.

    >>> measure(3 * MIB, "bytes"), measure(2.5, "req/s"), measure(None, "")
    ('3.00 MiB', '2.50 req/s', '-')
    """
    if value is None:
        return "-"
    return size(value) if unit == "bytes" else rate(value, unit)
