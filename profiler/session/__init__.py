"""Profiling sessions: every probe in one window, one folder, one reader."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from profiler.session.reader import Session


def open(path: str | Path) -> Session:  # shadows open(): profiler.session.open(path) reads best
    """Read a session folder (see :mod:`profiler.session.reader`); pandas is imported only here."""
    from profiler.session.reader import open as open_session

    return open_session(Path(path))
