"""memray's control channel to a worker, opened through the fast injection path first.

memray's protocol is unchanged: its ``_inject`` library connects back to a
port we listen on and runs, with the GIL, the Python source we send (memray's
own ``PAYLOAD`` for ``mem attach``, the task sampler's source for ``tasks``).
Only *how* the library gets loaded differs: :mod:`profiler.capture.inject`
makes one thread parked in a syscall load it at once (milliseconds, also in a
wedged worker); memray's breakpoint route (``--method gdb``/``lldb``) is the
fallback when no thread reaches a safe point within ``wait_safe`` seconds, and
the route taken is returned so callers can say so.

Steps are time-boxed, each with its own message: stop, thread choice and load
in the child (:data:`profiler.capture.inject.STEP_SECONDS`), then the channel
(the library's thread connecting back) here.
"""

from __future__ import annotations

import contextlib
import json
import platform
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from profiler.capture.gdb_health import broken_inferior_calls
from profiler.capture.tools import debugger_first_on_path
from profiler.errors import AttachError

CHANNEL_SECONDS = 5.0
HELPER_SECONDS = 30.0  # the child's own steps end long before: this only catches a hang
WAIT_SAFE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Route:
    """How the library got in: ``fast`` (thread ``tid`` parked in ``syscall``) or
    ``breakpoints`` (memray's debugger script; ``note`` says why)."""

    route: str
    tid: int | None = None
    syscall: str | None = None
    note: str | None = None


def injector_library() -> Path:
    """memray's ``_inject`` library, the one its own attach loads."""
    import memray

    return Path(memray._memray.__file__).parent / "_inject.abi3.so"


def open_channel(
    pid: int, method: str = "gdb", *, wait_safe: float = WAIT_SAFE_SECONDS
) -> tuple[socket.socket, Route]:
    """A connected socket to memray's client thread in ``pid``, and the route taken."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with contextlib.closing(server):
        server.bind(("localhost", 0))
        server.listen(1)
        port = server.getsockname()[1]
        if platform.machine() == "x86_64":
            said = _run_helper(pid, port, wait_safe)
        else:
            said = {"step": "thread", "error": f"no fast path on {platform.machine()} yet"}
        if "error" not in said:
            route = Route("fast", int(str(said["tid"])), str(said["syscall"]))
        elif said.get("step") == "thread":
            route = Route("breakpoints", note=str(said["error"]))
            _breakpoint_route(pid, port, method, str(said["error"]))
        elif said.get("step") == "python":
            raise AttachError(
                f"PID {pid} is not a Python process memray's library can run in: {said['error']}",
                hint="point at a Python gateway worker; `profiler workers` lists them",
            )
        else:
            raise AttachError(
                f"injecting into PID {pid} failed at step {said.get('step')}: {said['error']}",
                hint="the thread was restored and released; retry, or pass --method to compare",
            )
        server.settimeout(CHANNEL_SECONDS)
        try:
            client, _ = server.accept()
        except TimeoutError:
            raise AttachError(
                f"PID {pid} loaded memray's library but its thread did not connect back "
                f"within {CHANNEL_SECONDS:g}s (step channel)",
                hint="the worker may be out of threads or memory; nothing keeps running there",
            ) from None
    return client, route


def _run_helper(pid: int, port: int, wait_safe: float) -> dict[str, object]:
    """The injector child's first JSON line: its result, or its failure (a late load is
    reported while the child still waits for the call to return, then restores the thread
    and exits by itself: it is reaped in the background)."""
    command = [sys.executable, "-m", "profiler.capture.inject", "--pid", str(pid)]
    command += ["--library", str(injector_library()), "--port", str(port)]
    command += ["--wait-safe", str(wait_safe)]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a Ctrl-C here must not cut it mid-call
    )
    assert child.stdout is not None
    deadline = time.monotonic() + HELPER_SECONDS + wait_safe
    said: dict[str, object] | None = None
    while said is None and time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = child.stdout.readline()
        if not line:
            break  # it exited without a word
        if line.startswith("{"):
            said = json.loads(line)
    if said is not None and not said.get("late"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.communicate(timeout=HELPER_SECONDS)  # it exits once it has answered
    if child.poll() is None:  # still restoring a late load: let it finish, reap it after
        _LATE.append(child)
        threading.Thread(target=_reap, args=(child,), name=f"injector-{pid}", daemon=True).start()
    else:
        child.communicate()
    if said is not None:
        return said
    return {"step": "stop", "error": f"the injector gave no answer within {HELPER_SECONDS:g}s"}


_LATE: list[subprocess.Popen[str]] = []  # injectors finishing a late load, until reaped


def _reap(child: subprocess.Popen[str]) -> None:
    child.communicate()
    _LATE.remove(child)


def _breakpoint_route(pid: int, port: int, method: str, why: str) -> None:
    """memray's own debugger script: waits for a thread to allocate (can take a timeout)."""
    from memray.commands.attach import debugger_inject

    unsafe = breakpoint_route_unsafe(method)
    if unsafe:
        raise AttachError(
            f"no thread of PID {pid} was at a safe point ({why}), and the fallback "
            f"is unsafe here: {unsafe}",
            hint="retry when the worker is less busy; or upgrade gdb",
        )
    error = debugger_inject(method, pid, port, verbose=False)
    if error:
        raise AttachError(
            f"memray's {method} route into PID {pid} failed: {' '.join(error.split())}",
            hint="`memray attach --verbose` shows the debugger's output",
        )


def breakpoint_route_unsafe(method: str) -> str | None:
    """Why memray's debugger route would harm the worker here, or None.

    gdb 13 writes a fixed-size extended register state: on a CPU with AMX the
    kernel refuses it (``Couldn't write extended state status: Bad address``)
    and the half-made call kills the worker (seen on gdb 13.1, Linux 6.18). The
    gdb read is the one memray will run (:func:`debugger_first_on_path`).
    """
    if method != "gdb" or debugger_first_on_path("gdb") is None:
        return None
    broken = broken_inferior_calls()
    return f"{broken}; its injected call would kill the worker" if broken else None
