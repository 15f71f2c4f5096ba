"""Starting and stopping the processes we own, always by PID."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from profiler.capture.ptrace import read_access
from profiler.errors import AttachError


class ProcessDidNotStart(RuntimeError):
    pass


def spawn_python_until_ready(
    code: str, *, timeout: float = 20.0, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -c code`` and return once it prints ``ready`` on stdout.

    A target that is ready before we attach makes attach tests deterministic
    without sleeps.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    readable, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline() if readable else ""
    if line.strip() != "ready":
        stop_pid(child.pid)
        _, stderr = child.communicate(timeout=5)
        raise ProcessDidNotStart(f"python did not print 'ready' (got {line!r}): {stderr[-500:]}")
    return child


def spawn_detached(argv: list[str], log: Path, env: dict[str, str]) -> int:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log``.

    For services that must outlive the command that starts them (``lab up``):
    a new session keeps a Ctrl-C in that shell from reaching them, and no
    ``Popen`` object is left behind to be collected while the child runs.
    """
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)


def stop_pid(pid: int, *, grace: float = 5.0) -> bool:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. True if it was running.

    psutil's ``wait`` also reaps the process when it is our child, so stopping
    what this process started leaves no zombie behind.
    """
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        try:
            proc.kill()
            proc.wait(grace)
        except psutil.NoSuchProcess:
            pass
    return True


def is_running(pid: int, create_time: float | None = None) -> bool:
    """True if ``pid`` runs, and is the same process when ``create_time`` is given.

    PIDs are reused; a state file that outlived its processes must not make us
    signal a stranger.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 0.01
    except psutil.NoSuchProcess:
        return False


def create_time(pid: int) -> float:
    return float(psutil.Process(pid).create_time())


@contextlib.contextmanager
def readable_process(pid: int) -> Iterator[psutil.Process]:
    """``pid``'s psutil handle, for a block that reads it before attaching: psutil's
    "no such process" and "access denied" raised in the block become an
    :class:`AttachError` (exit 3) with the next step."""
    try:
        yield psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise AttachError(
            f"no process with PID {pid}", hint="list the workers with `profiler workers`"
        ) from None
    except psutil.AccessDenied:
        access = read_access()
        raise AttachError(
            f"permission denied reading PID {pid}: {access.explain()}", hint=access.hint()
        ) from None


def executable(pid: int) -> str:
    """What ``pid`` runs (``/proc/PID/exe``), for messages; ``executable unknown`` if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return "executable unknown"
