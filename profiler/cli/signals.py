"""SIGTERM during a capture ends it the way Ctrl-C does: stop the tools, keep the data."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Terminated(BaseException):
    """SIGTERM arrived while a capture ran.

    A BaseException, as KeyboardInterrupt is: libraries that wrap every
    ``Exception`` (SQLAlchemy turns one raised mid-query into an
    ``OperationalError``) must let it through to the command that stops the
    tools and keeps the data.
    """


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Raise :class:`Terminated` in the main thread on SIGTERM, for as long as the block runs.

    Without it SIGTERM kills us outright: py-spys and memray trackers would be
    left running and nothing sampled so far would be written.
    """

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
