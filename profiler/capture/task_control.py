"""Ending a running task sampler: the stop file, the lease, waiting for the ``end`` line.

Once :mod:`profiler.capture.task_inject` has started it, the sampler runs on a
daemon thread inside the worker, where we can no longer call it: every message
to it is a file beside the one it writes, checked once a round. It stops by
itself at its ``duration``, when :func:`request_stop` creates ``PATH.stop``, at
interpreter exit, or when a lease taken with :class:`Leases` is not renewed (we
died): a killed profiler must not leave workers sampling for a long duration.
Its last line says which (``end``, see :mod:`profiler.capture.task_log`);
:func:`wait_for_end` waits for that line, then removes the messages.

A worker in other namespaces wrote its file in its own filesystem, and the
path we were given is a link to it through ``/proc/PID/root`` (so the stop and
lease files reach the sampler); :func:`materialize` replaces the link with a
copy once the sampler has ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from profiler.capture import task_payload

STOP_SUFFIX = task_payload.STOP_SUFFIX
LEASE_SUFFIX = task_payload.LEASE_SUFFIX
UNBOUNDED_SECONDS = 24 * 3600.0  # "until stopped": the stop file or the lease ends it sooner
STOP_SLACK_SECONDS = 30.0  # beyond a session's duration, so the stop file is what ends it
LEASE_SECONDS = 30.0  # a lease not renewed for this long stops the sampler
LEASE_RENEW_SECONDS = 5.0


def materialize(path: Path) -> None:
    """Replace a link into a worker's filesystem by a copy of the file, and tidy up there."""
    if not path.is_symlink():
        return
    target = Path(os.readlink(path))
    with contextlib.suppress(OSError):
        data = target.read_bytes()
        path.unlink()
        path.write_bytes(data)
        target.unlink()
    for suffix in (STOP_SUFFIX, LEASE_SUFFIX):
        link = Path(f"{path}{suffix}")
        with contextlib.suppress(OSError):
            if link.is_symlink():
                Path(os.readlink(link)).unlink(missing_ok=True)


def request_stop(path: Path) -> None:
    """Ask the sampler writing ``path`` to stop: it ends at its next round (``stopped``)."""
    Path(f"{path}{STOP_SUFFIX}").touch()


def wait_for_end(paths: Sequence[Path], *, timeout: float) -> list[Path]:
    """Wait up to ``timeout`` for every file to have its ``end`` line; the ones that did not.

    The stop and lease files of the files that ended are removed: they were
    only messages to the sampler.
    """
    deadline = time.monotonic() + timeout
    pending = list(paths)
    while True:
        pending = [path for path in pending if not _ended(path)]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for path in paths:
        materialize(path)  # a worker in a container wrote it in its filesystem
        if path not in pending:
            for suffix in (STOP_SUFFIX, LEASE_SUFFIX):
                with contextlib.suppress(OSError):
                    Path(f"{path}{suffix}").unlink()
    return pending


@dataclass
class Leases:
    """Leases on running samplers: while we live and renew them, they keep sampling.

    A sampler whose ``PATH.lease`` exists and was not touched for its
    ``lease_seconds`` stops by itself (``lease expired``): if this process is
    killed, the workers stop sampling within that time rather than at the end
    of a long duration. Leaving the block keeps the leases (stop the samplers
    with :func:`request_stop`); they expire by themselves.
    """

    paths: Sequence[Path]
    renewed_at: float = field(default=0.0, init=False)

    def __enter__(self) -> Leases:
        self.renew()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def renew(self) -> None:
        """Touch every lease now (a sampler that already ended does not mind)."""
        for path in self.paths:
            with contextlib.suppress(OSError):
                Path(f"{path}{LEASE_SUFFIX}").touch()
        self.renewed_at = time.time()


def _ended(path: Path) -> bool:
    """The file's last complete line is an ``end`` record (read from its tail only)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 4096))
            tail = handle.read()
    except OSError:
        return False
    lines = tail.split(b"\n")
    last = lines[-2] if len(lines) >= 2 else b""
    try:
        record = json.loads(last)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("kind") == "end"
