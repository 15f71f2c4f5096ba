"""Ctrl-C and SIGTERM during a command: stop the work, keep the data, restore the handlers.

Two ways a command meets a signal, both here so that every command behaves alike:

* :func:`stop_on_signals`: the work runs until an event is set (``db watch``,
  ``session run``, ``watch``). The first SIGINT or SIGTERM asks it to stop; a second
  one, a user who will not wait for the stop, interrupts at once (exit 6).
* :func:`terminate_as_exception`: the work is a blocking call that Ctrl-C already
  interrupts (``cpu record``, ``mem attach``, ``demo``); SIGTERM then does the same.

Both put the previous handlers back when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator


class Terminated(BaseException):
    """SIGTERM arrived while a capture ran.

    A BaseException, as KeyboardInterrupt is: libraries that wrap every
    ``Exception`` (SQLAlchemy turns one raised mid-query into an
    ``OperationalError``) must let it through to the command that stops the
    tools and keeps the data.
    """


Handler = Callable[[int, object], None]


@contextlib.contextmanager
def _handling(handlers: dict[signal.Signals, Handler]) -> Iterator[None]:
    """Install ``handlers`` for the block, then put back whatever was there before."""
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[list[str]]:
    """SIGINT and SIGTERM ask the block's work to stop: the first calls ``stop``; the
    block gets the names of the signals that arrived (``["SIGTERM"]``), to say what ended
    it and to choose the exit code. A second signal raises KeyboardInterrupt (exit 6,
    "interrupted"): the stop is taking too long for the user.

    Main thread only, as every signal handler.
    """
    arrived: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        if arrived:
            raise KeyboardInterrupt
        arrived.append(signal.Signals(signum).name)
        stop()

    with _handling({signal.SIGINT: on_signal, signal.SIGTERM: on_signal}):
        yield arrived


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Raise :class:`Terminated` in the main thread on SIGTERM, for as long as the block runs.

    Without it SIGTERM kills us outright: py-spys and memray trackers would be
    left running and nothing sampled so far would be written. SIGINT is left to
    Python (KeyboardInterrupt), or ignored when we were started with it ignored.
    """

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    with _handling({signal.SIGTERM: terminate}):
        yield
