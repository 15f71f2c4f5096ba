"""Starting the asyncio task sampler in a live worker: :mod:`~profiler.capture.task_payload`
sent through memray's attach channel.

py-spy sees threads only: a request coroutine suspended at ``await`` while it
holds a database connection is on no thread's stack. The sampler runs inside
the worker instead. It is started through memray's attach channel
(:mod:`profiler.capture.channel` loads memray's ``_inject`` library from *our*
memray into the worker, through a thread parked in a syscall, and that library
runs the Python source we send, with the GIL held), so the worker needs
neither a restart nor memray nor profiler installed: the payload is pure
stdlib. The source sent is :mod:`profiler.capture.task_payload` itself plus
one ``start(...)`` line; it opens the output file, starts a daemon thread and
returns, so the injection costs the worker no more than the debugger's stop.

The worker writes the file as its own user (check :func:`check_writable`);
how the sampler is stopped is :mod:`profiler.capture.task_control`'s, how its
file is read :mod:`profiler.capture.task_log`'s.
``docs/explanation/task-sampling.md`` says what can and cannot be attributed
this way, and what it costs.

A worker in other namespaces (a container) gets the same treatment as memray's
attach (:mod:`profiler.memory.attach`): the channel is opened from inside its
namespaces by a small client run under ``nsenter`` (the worker's interpreter
when it has memray, ours when our environment is visible there), the
sampler writes into a folder of the worker's own filesystem, and the file we
were asked for is a link to it through ``/proc/PID/root`` (so stop and lease
files reach the sampler) until :func:`~profiler.capture.task_control.wait_for_end`
replaces it with a copy.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from profiler.capture import task_payload
from profiler.capture.processes import executable, readable_process
from profiler.capture.ptrace import PTRACE_HINT, read_access, require_ptrace
from profiler.capture.task_control import LEASE_SECONDS, LEASE_SUFFIX, STOP_SUFFIX
from profiler.capture.tools import debugger_first_on_path
from profiler.capture.writable import check_writable
from profiler.errors import AttachError, ToolMissingError, UsageError
from profiler.targets.interpreter import interpreter_of, probe_interpreter
from profiler.targets.namespaces import (
    Namespaces,
    find_inside,
    inside_env,
    namespaces_of,
    scratch_dir,
    visible_inside,
)

METHODS = ("gdb", "lldb")
CHANNEL_TIMEOUT_SECONDS = 30.0
# Run in the worker's namespaces: open memray's channel to PID (argv[2]) with the
# debugger (argv[1]), send stdin, print what the worker answered.
CHANNEL_CLIENT = """
import socket, sys
from memray._errors import MemrayCommandError
from memray.commands.attach import AttachCommand, recvall
try:
    client = AttachCommand().inject_control_channel(sys.argv[1], int(sys.argv[2]))
except MemrayCommandError as exc:
    sys.stderr.write(str(exc))
    sys.exit(2)
client.settimeout(float(sys.argv[3]))
client.sendall(sys.stdin.read().encode("utf-8"))
client.shutdown(socket.SHUT_WR)
sys.stdout.write(recvall(client))
"""


# Same parameters as task_payload.start on purpose: the payload runs in the worker with
# the stdlib only, so it cannot share a signature or a record with this side.
def payload_source(
    path: Path,
    *,
    interval: float,
    duration: float,
    max_tasks: int = 500,
    lease_seconds: float | None = LEASE_SECONDS,
) -> str:
    """The exact Python source sent to the worker: the payload module and its ``start`` call."""
    source = Path(task_payload.__file__).read_text(encoding="utf-8")
    call = (
        f"start({str(path)!r}, {float(interval)!r}, {float(duration)!r}, {int(max_tasks)!r}, "
        f"{None if lease_seconds is None else float(lease_seconds)!r})"
    )
    return f"{source}\n{call}\n"


def inject(
    pid: int,
    path: Path,
    *,
    interval: float,
    duration: float,
    method: str = "gdb",
    max_tasks: int = 500,
    lease_seconds: float | None = LEASE_SECONDS,
) -> str:
    """Start the task sampler in worker ``pid``, writing ``path``; returns once it runs,
    saying how memray's library got in (``fast``, ``breakpoints: why``, or ``memray``
    for a worker in other namespaces, which keeps memray's route).

    Checked first, in the order a fix has to happen: the options, the output
    (absent, its folder writable by the worker's user), the process, the
    debugger, ptrace. Every failure is an :class:`AttachError` (exit 3) with
    one line and a next step, or a :class:`ToolMissingError` (exit 5) when
    the debugger is missing; the payload's own error (it raised in the
    worker) comes back as the message. Takes ~0.1-0.3 s, also in a wedged worker.
    """
    if interval <= 0 or duration <= 0 or max_tasks <= 0:
        raise UsageError(
            "the task sampler needs a positive interval, duration and max_tasks",
            hint="e.g. interval=0.2, duration=60",
        )
    if method not in METHODS:
        raise UsageError(f"unknown injection method {method!r}", hint="use gdb or lldb")
    path = path.absolute()
    if path.exists():
        raise UsageError(
            f"{path} already exists", hint="the sampler never overwrites: pick a new path"
        )
    with readable_process(pid) as proc:
        proc.status()
    space = namespaces_of(pid)
    if space.isolated:
        _inject_isolated(space, path, method, interval, duration, max_tasks, lease_seconds)
        return "memray"
    check_writable(path.parent, [pid])
    if debugger_first_on_path(method) is None:
        raise ToolMissingError(
            f"the task sampler is injected through {method}, which is not installed here",
            hint=f"install {method} (apt install {method} / dnf install {method})",
        )
    require_ptrace(pid)
    source = payload_source(
        path,
        interval=interval,
        duration=duration,
        max_tasks=max_tasks,
        lease_seconds=lease_seconds,
    )
    error, route = _send(pid, method, source)
    if error:
        raise _payload_failure(pid, path, error)
    return route


def _inject_isolated(
    space: Namespaces,
    path: Path,
    method: str,
    interval: float,
    duration: float,
    max_tasks: int,
    lease_seconds: float | None,
) -> None:
    """:func:`inject` for a worker in other namespaces (see the module's docstring)."""
    pid = space.pid
    if find_inside(space, (method,)) is None:
        raise AttachError(
            f"no {method} in the filesystem of {space.label()}: the task sampler is injected "
            "through it, run inside the container",
            hint=f"add {method} to the image (apt-get install -y {method}), or pass --no-tasks",
        )
    require_ptrace(pid)
    inside: Path = path
    if space.other_filesystem:
        proc = psutil.Process(pid)
        folder = scratch_dir(space, proc.uids().effective, proc.gids().effective)
        inside = Path(str(folder / path.name))
        check_writable(path.parent, [])
        for suffix in ("", STOP_SUFFIX, LEASE_SUFFIX):
            Path(f"{path}{suffix}").symlink_to(space.host_path(f"{inside}{suffix}"))
    python, env = _channel_python(space)
    source = payload_source(
        inside,
        interval=interval,
        duration=duration,
        max_tasks=max_tasks,
        lease_seconds=lease_seconds,
    )
    command = [*space.enter(), python, "-c", CHANNEL_CLIENT, method, str(space.ns_pid)]
    command.append(str(CHANNEL_TIMEOUT_SECONDS))
    try:
        result = subprocess.run(
            command,
            input=source,
            capture_output=True,
            text=True,
            env=env,
            timeout=CHANNEL_TIMEOUT_SECONDS + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AttachError(
            f"opening memray's channel in {space.label()} did not finish in time",
            hint="retry; check the worker is not stopped (kill -CONT PID)",
        ) from None
    if result.returncode != 0:
        raise _channel_failure(pid, result.stderr or result.stdout)
    if result.stdout.strip():
        raise _payload_failure(pid, inside, result.stdout)


def _channel_python(space: Namespaces) -> tuple[str, dict[str, str]]:
    """Who opens the channel inside: the worker's interpreter if it has memray, else ours
    when our environment is the same files in the worker's filesystem."""
    env = inside_env(space.pid)
    interpreter = interpreter_of(psutil.Process(space.pid))
    facts = probe_interpreter(interpreter, space.pid)
    if facts is not None and facts.memray_importable:
        return interpreter, env
    if visible_inside(space, sys.prefix):
        env.pop("PYTHONPATH", None)
        return sys.executable, env
    raise AttachError(
        f"the task sampler cannot be injected into {space.label()}: memray opens the channel "
        "from inside the container, and neither the worker's Python nor ours is there",
        hint="install memray in the image (it is only used to inject), or pass --no-tasks",
    )


# -- injecting -----------------------------------------------------------------------------


def _send(pid: int, method: str, source: str) -> tuple[str, str]:
    """Inject memray's channel into ``pid``, send ``source``; what the worker answered
    (empty when the code ran without raising), and the route taken."""
    from memray.commands.attach import recvall

    from profiler.capture.channel import open_channel

    if not psutil.pid_exists(pid):
        raise _channel_failure(pid, "")
    client, route = open_channel(pid, method)
    taken = route.route if route.note is None else f"{route.route}: {route.note}"
    with contextlib.closing(client):
        client.settimeout(CHANNEL_TIMEOUT_SECONDS)
        try:
            client.sendall(source.encode("utf-8"))
            client.shutdown(socket.SHUT_WR)
            return recvall(client), taken
        except OSError as exc:
            raise AttachError(
                f"lost the channel to PID {pid} while starting the task sampler: {exc}",
                hint="check the worker is still alive; retry",
            ) from None


def _channel_failure(pid: int, said: str) -> AttachError:
    """memray's words when the debugger could not open the channel, as a diagnosis."""
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    text = " ".join(lines) or "(no output)"
    if not psutil.pid_exists(pid):
        return AttachError(
            f"PID {pid} exited before the task sampler could be injected",
            hint="list the workers with `profiler workers`",
        )
    if "does not seem to be running Python" in text or "Failed to execute our" in text:
        return AttachError(
            f"PID {pid} is not a Python process the sampler can run in ({executable(pid)}): {text}",
            hint="point at a Python gateway worker; `profiler workers` lists them",
        )
    if "permission" in text.lower() or "different user" in text:
        return AttachError(
            f"cannot attach a debugger to PID {pid} ({read_access().explain()}): {text}",
            hint=PTRACE_HINT,
        )
    if "couldn't open the memray shared library" in text:
        return AttachError(
            f"PID {pid} cannot load memray's injector from our environment: {text}",
            hint="make our memray installation readable by the worker's user",
        )
    from profiler.capture.gdb_health import HINT, broken_inferior_calls

    broken = broken_inferior_calls()
    if broken is not None:
        return AttachError(f"injecting the task sampler into PID {pid} failed: {broken}", hint=HINT)
    return AttachError(
        f"injecting the task sampler into PID {pid} failed: {text}",
        hint="retry; `memray attach --verbose` shows the debugger's full output",
    )


def _payload_failure(pid: int, path: Path, error: str) -> AttachError:
    """The payload raised in the worker (nothing keeps running there): why, and what to do."""
    text = error.strip().splitlines()[-1] if error.strip() else "(no message)"
    if "FileExistsError" in text:
        hint = "the sampler never overwrites: pick a new path"
    elif "PermissionError" in text or "FileNotFoundError" in text:
        hint = f"the worker writes {path} as its own user: make {path.parent} writable by it"
    else:
        hint = "the worker's Python may be too old (3.8+ is needed); nothing keeps running there"
    return AttachError(f"the task sampler did not start in PID {pid}: {text}", hint=hint)
