"""Starting and stopping the processes we own, always by PID."""

from __future__ import annotations

import select
import signal
import subprocess
import sys

import psutil


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


def stop_pid(pid: int, *, grace: float = 5.0) -> bool:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. True if it was running."""
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
