"""Numbers as the pages and tables print them, where two of them must agree."""

from __future__ import annotations


def offset(seconds: float, *, unit: str = "s") -> str:
    """A time relative to the session's start, signed: a transaction that began before the
    session started is ``-14.9s``, never ``+-14.9s``.

    >>> offset(8.54), offset(-14.93), offset(-0.01), offset(2.0, unit=" s")
    ('+8.5s', '-14.9s', '+0.0s', '+2.0 s')
    """
    rounded = round(seconds, 1)
    sign = "-" if rounded < 0 else "+"
    return f"{sign}{abs(rounded):.1f}{unit}"
