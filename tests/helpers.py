"""Small helpers the tests share."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from profiler.model import ActivitySample

T = TypeVar("T")


def retry(
    probe: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy; fail the test after ``timeout``.

    Polling a condition instead of sleeping keeps tests fast when things are
    quick and correct when the machine is slow.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or probe!r} (last: {last!r})"
    )


def client_backend(
    sampled_at: float,
    pid: int,
    *,
    state: str,
    backend_start: float,
    query_start: float,
    state_change: float,
    xact_start: float | None = None,
    query: str = "SELECT 1",
    query_id: int | None = None,
    application_name: str = "gateway",
    client_addr: str = "127.0.0.1",
) -> ActivitySample:
    """One client backend's pg_stat_activity row, times on the server's clock; what varies
    between tests is a parameter, the rest is what a gateway's backend looks like."""
    from profiler.model import ActivitySample

    waiting = state != "active"
    return ActivitySample(
        sampled_at=sampled_at,
        pid=pid,
        leader_pid=None,
        datname="app",
        usename="app",
        application_name=application_name,
        client_addr=client_addr,
        client_hostname=None,
        client_port=40_000 + pid,
        backend_start=backend_start,
        xact_start=xact_start,
        query_start=query_start,
        state_change=state_change,
        wait_event_type="Client" if waiting else None,
        wait_event="ClientRead" if waiting else None,
        state=state,
        backend_xid="1234" if xact_start is not None else None,
        backend_xmin=None,
        query_id=query_id,
        query=query,
        query_truncated=False,
        backend_type="client backend",
    )


def run_in_terminal(
    args: list[str], *, columns: int, env: dict[str, str], cwd: str, timeout: float = 60.0
) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal ``columns`` wide.

    What a user sees in a terminal of that width (rich asks the terminal, and
    ``isatty`` is true), unlike a pipe. Returns the exit code and the output as
    shown: ``\\r\\n`` as ``\\n``, styles (bold, colour) removed.
    """
    import fcntl
    import os
    import pty
    import re
    import select
    import struct
    import subprocess
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    try:
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
        else:
            raise AssertionError(f"{args} still writing after {timeout}s")
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
        child.wait(10)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    return child.returncode, shown.replace("\r\n", "\n")


def connections_to(port: int | None, status: str) -> list[object]:
    """The TCP sockets on this machine's ``port`` (the server's side) in ``status``
    (``psutil.CONN_ESTABLISHED``, ``CONN_TIME_WAIT``...): one per client connection."""
    import psutil

    return [
        c
        for c in psutil.net_connections(kind="tcp4")
        if c.status == status and c.laddr and c.laddr.port == port
    ]


def lines_of_kind(path: Path, kind: str) -> int:
    """How many whole JSON lines of ``kind`` the file a probe is writing holds yet (a line
    still being written, with no newline, is not counted)."""
    import json

    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    return sum(line.endswith("\n") and json.loads(line).get("kind") == kind for line in lines)
