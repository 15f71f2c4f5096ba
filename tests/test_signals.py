"""The one signal helper: the first signal asks to stop, a second interrupts, and the
handlers that were there before are back afterwards.

``signal.raise_signal`` runs the Python handler before it returns, so no waiting is needed.
"""

from __future__ import annotations

import signal
import threading

import pytest

from profiler.cli.signals import Terminated, stop_on_signals, terminate_as_exception


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_asks_to_stop_and_a_second_interrupts(signum: signal.Signals) -> None:
    # GIVEN a block whose work stops when an event is set
    stop = threading.Event()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt), stop_on_signals(stop.set) as arrived:
        # WHEN the signal arrives once
        signal.raise_signal(signum)
        # THEN the work is asked to stop and the block knows which signal it was
        assert stop.is_set()
        assert arrived == [signum.name]
        # AND a second one interrupts
        signal.raise_signal(signum)
    # AND the handlers from before are back
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sigterm_raises_terminated_and_the_handler_is_restored() -> None:
    # GIVEN a capture that ends the way Ctrl-C ends it
    before = signal.getsignal(signal.SIGTERM)
    # WHEN SIGTERM arrives
    with pytest.raises(Terminated), terminate_as_exception():
        signal.raise_signal(signal.SIGTERM)
    # THEN it raised Terminated, and SIGTERM is handled as before
    assert signal.getsignal(signal.SIGTERM) == before
