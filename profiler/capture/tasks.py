"""Sampling a live worker's asyncio tasks: inject :mod:`~profiler.capture.task_payload`, read
what it writes.

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
it stops by itself at ``duration``, when :func:`request_stop` creates
``PATH.stop``, at interpreter exit, or when a lease taken with
:class:`Leases` is not renewed (we died). ``docs/explanation/task-sampling.md``
says what can and cannot be attributed this way, and what it costs.

File format (JSON lines, ``profiler-task-samples`` version 1): a header
(``kind: header``, ``pid``, ``interval``, ``python``, ``started_at``, ...), then
per round one ``task`` line per live task (``taken_at``, ``task_id``, ``task``,
``frames`` innermost first as ``[name, filename, line]``, ``awaiting``,
``running``, ``backends``, ``ports``: the local ports of those connections' TCP
client sockets, absent from older files; ``endpoint`` with its ``request``, ``openers``)
and one ``round`` line (``taken_at``, ``tasks``,
``skipped``, ``seconds`` and ``cpu_seconds``: the round's wall and CPU time), and
last an ``end`` line
(``reason``: ``duration``, ``stopped``, ``shutdown``, ``lease expired`` or
``error: ...``).

A worker in other namespaces (a container) gets the same treatment as memray's
attach (:mod:`profiler.memory.attach`): the channel is opened from inside its
namespaces by a small client run under ``nsenter`` (the worker's interpreter
when it has memray, ours when our environment is visible there), the
sampler writes into a folder of the worker's own filesystem, and the file we
were asked for is a link to it through ``/proc/PID/root`` (so stop and lease
files reach the sampler) until :func:`wait_for_end` replaces it with a copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psutil

from profiler.analysis.code_paths import ENDPOINT_PREFIX
from profiler.capture import task_payload
from profiler.capture.ptrace import PTRACE_HINT, read_access
from profiler.capture.stacks import Frame
from profiler.capture.tools import debugger_first_on_path
from profiler.capture.writable import check_writable
from profiler.errors import AttachError, InputError, ToolMissingError, UsageError
from profiler.jsonl import LineStream
from profiler.targets.interpreter import interpreter_of, probe_interpreter
from profiler.targets.namespaces import (
    Namespaces,
    find_inside,
    inside_env,
    namespaces_of,
    scratch_dir,
    visible_inside,
)

if TYPE_CHECKING:
    import pandas as pd

FORMAT = task_payload.FORMAT
VERSION = task_payload.VERSION
HINT = "task samples are written by `profiler.capture.tasks.inject` (session probe `tasks`)"
METHODS = ("gdb", "lldb")
STOP_SUFFIX = task_payload.STOP_SUFFIX
LEASE_SUFFIX = task_payload.LEASE_SUFFIX
UNBOUNDED_SECONDS = 24 * 3600.0  # "until stopped": the stop file or the lease ends it sooner
STOP_SLACK_SECONDS = 30.0  # beyond a session's duration, so the stop file is what ends it
LEASE_SECONDS = 30.0  # a lease not renewed for this long stops the sampler
LEASE_RENEW_SECONDS = 5.0
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

TASK_COLUMNS = (
    "taken_at",
    "worker_pid",
    "task_id",
    "task",
    "stack",
    "leaf",
    "depth",
    "backends",
    "ports",
    "awaiting",
    "endpoint",
    "request",
    "openers",
)
ROUND_COLUMNS = ("taken_at", "tasks", "skipped", "seconds", "cpu_seconds")


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
    _require_process(pid)
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
    access = read_access()
    if not access.can_attach_any_own_process and not access.is_root:
        raise AttachError(
            f"ptrace is not allowed here ({access.explain()}): cannot attach to PID {pid}",
            hint=PTRACE_HINT,
        )
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
    _require_ptrace(pid)
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


def _require_ptrace(pid: int) -> None:
    access = read_access()
    if not access.can_attach_any_own_process and not access.is_root:
        raise AttachError(
            f"ptrace is not allowed here ({access.explain()}): cannot attach to PID {pid}",
            hint=access.hint(),
        )


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


# -- reading -------------------------------------------------------------------------------


def read(path: Path) -> pd.DataFrame:
    """One row per task per round: see ``TASK_COLUMNS``.

    ``stack`` is collapsed outermost first with :attr:`Frame.label` labels,
    so it merges with py-spy's stacks; ``leaf`` is the innermost frame's
    name; ``backends`` are tuples of backend PIDs, ``ports`` tuples of the local ports
    of those connections' client sockets (empty for files written before them). A torn last line is
    ignored; any other corrupt line, or a file of another format or version,
    is an :class:`InputError`.
    """
    return _scan(path).tasks()


def read_rounds(path: Path) -> pd.DataFrame:
    """One row per round: ``taken_at`` (UTC), ``tasks``, ``skipped``, ``seconds`` (wall) and
    ``cpu_seconds`` (the sampler thread's CPU time: its cost to the worker)."""
    return _scan(path).rounds_frame()


def read_end(path: Path) -> dict[str, Any] | None:
    """The ``end`` record (``taken_at``, ``reason``), or None while the sampler runs."""
    return _scan(path).end


def read_header(path: Path) -> dict[str, Any]:
    """The header: the worker's ``pid``, ``interval``, ``python``, ``started_at``, ..."""
    return _scan(path).header


def endpoint_label(endpoint: Any) -> str | None:
    """``endpoint POST /tools/{tool_id}/invoke (invoke_tool)``: a task's request, as the root
    frame of its hold stacks (:data:`ENDPOINT_PREFIX`); None when unknown."""
    if not isinstance(endpoint, dict) or not endpoint.get("name"):
        return None
    route = " ".join(str(part) for part in (endpoint.get("method"), endpoint.get("route")) if part)
    name = str(endpoint["name"]).rsplit(".<locals>.", 1)[-1]
    return f"{ENDPOINT_PREFIX}{route} ({name})" if route else f"{ENDPOINT_PREFIX}({name})"


def _openers(
    value: Any, short: Callable[[str], str | None]
) -> tuple[tuple[int, str, str, int, str], ...]:
    """A task line's ``openers`` (``[backend, function, filename, line, via]`` each, the
    file as stack labels show it), or none (files written before the sampler recorded
    them)."""
    if not isinstance(value, list):
        return ()
    rows = []
    for item in value:
        if isinstance(item, list) and len(item) == 5:
            backend, function, filename, line, via = item
            name = str(filename)
            shown = short(name) or os.path.basename(name)
            rows.append((int(backend), str(function), shown, int(line), str(via)))
    return tuple(rows)


def empty() -> pd.DataFrame:
    """The task table with no rows, typed as :func:`read` types it."""
    return _Scan(Path(), {"pid": 0}).tasks()


@dataclass
class _Scan:
    path: Path
    header: dict[str, Any]
    taken: list[float] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    stacks: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    backends: list[tuple[int, ...]] = field(default_factory=list)
    ports: list[tuple[int, ...]] = field(default_factory=list)
    awaiting: list[str | None] = field(default_factory=list)
    endpoints: list[str | None] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    openers: list[tuple[tuple[int, str, str, int, str], ...]] = field(default_factory=list)
    rounds: list[tuple[float, int, int, float, float]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    shapes: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    prefixes: list[str] | None = None  # the worker's sys.path entries, longest first

    def short(self, filename: str) -> str | None:
        """``filename`` without the longest ``sys.path`` entry of the worker it lies under,
        as py-spy's ``short_filename`` is, so task and thread stacks share labels."""
        if self.prefixes is None:
            entries = self.header.get("sys_path") or []
            self.prefixes = sorted(
                (e.rstrip("/") + "/" for e in entries if isinstance(e, str) and e.startswith("/")),
                key=len,
                reverse=True,
            )
        for prefix in self.prefixes:
            if filename.startswith(prefix):
                return filename[len(prefix) :]
        return None

    def add_task(self, record: dict[str, Any], frames_key: str) -> None:
        shape = self.shapes.get(frames_key)
        if shape is None:
            frames = [
                Frame(str(name), str(filename), int(line), None, self.short(str(filename)))
                for name, filename, line in record["frames"]
            ]
            stack = ";".join(frame.label for frame in reversed(frames))
            shape = (stack, frames[0].name if frames else "", len(frames))
            self.shapes[frames_key] = shape
        openers = _openers(record.get("openers"), self.short)
        # What an opener holds is held by the task, also where the bounded walk missed it
        # (a yield dependency's session on the request's exit stack).
        backends = tuple(sorted({int(pid) for pid in record["backends"]} | {o[0] for o in openers}))
        self.taken.append(float(record["taken_at"]))
        self.task_ids.append(int(record["task_id"]))
        self.names.append(str(record["task"]))
        self.stacks.append(shape[0])
        self.leaves.append(shape[1])
        self.depths.append(shape[2])
        self.backends.append(backends)
        self.ports.append(tuple(int(port) for port in record.get("ports") or ()))
        awaiting = record.get("awaiting")
        self.awaiting.append(None if awaiting is None else str(awaiting))
        endpoint = record.get("endpoint")
        self.endpoints.append(endpoint_label(endpoint))
        request = endpoint.get("request") if isinstance(endpoint, dict) else None
        self.requests.append(request if isinstance(request, int) else -1)
        self.openers.append(openers)

    def tasks(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        rows = len(self.taken)
        backends = np.empty(rows, dtype=object)
        backends[:] = self.backends
        openers = np.empty(rows, dtype=object)
        openers[:] = self.openers
        ports = np.empty(rows, dtype=object)
        ports[:] = self.ports
        frame: pd.DataFrame = pd.DataFrame(
            {
                "taken_at": _utc(self.taken),
                "worker_pid": np.full(rows, int(self.header["pid"]), dtype=np.int64),
                "task_id": np.asarray(self.task_ids, dtype=np.int64),
                "task": pd.Categorical(self.names),
                "stack": pd.Categorical(self.stacks),
                "leaf": pd.Categorical(self.leaves),
                "depth": np.asarray(self.depths, dtype=np.int64),
                "backends": pd.Series(backends, dtype=object),
                "ports": pd.Series(ports, dtype=object),
                "awaiting": pd.Categorical(self.awaiting),
                "endpoint": pd.Categorical(self.endpoints),
                "request": np.asarray(self.requests, dtype=np.int64),
                "openers": pd.Series(openers, dtype=object),
            }
        )
        return frame

    def rounds_frame(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        frame: pd.DataFrame = pd.DataFrame(
            {
                "taken_at": _utc([r[0] for r in self.rounds]),
                "tasks": np.asarray([r[1] for r in self.rounds], dtype=np.int64),
                "skipped": np.asarray([r[2] for r in self.rounds], dtype=np.int64),
                "seconds": np.asarray([r[3] for r in self.rounds], dtype=np.float64),
                "cpu_seconds": np.asarray([r[4] for r in self.rounds], dtype=np.float64),
            }
        )
        return frame


def _scan(path: Path) -> _Scan:
    stream = LineStream(path, FORMAT, VERSION, HINT)
    lines = iter(stream)
    first = next(lines, None)  # reads (and checks) the header
    scan = _Scan(path, stream.header)
    if not isinstance(scan.header.get("pid"), int):
        raise InputError(f"{path} has a header without the worker's pid", hint=HINT)
    for number, line in [first, *lines] if first is not None else []:
        try:
            record = json.loads(line)
            kind = record["kind"]
            if kind == "task":
                scan.add_task(record, json.dumps(record["frames"]))
            elif kind == "round":
                scan.rounds.append(
                    (
                        float(record["taken_at"]),
                        int(record["tasks"]),
                        int(record.get("skipped", 0)),
                        float(record["seconds"]),
                        float(record.get("cpu_seconds", "nan")),
                    )
                )
            elif kind == "end":
                scan.end = {"taken_at": float(record["taken_at"]), "reason": str(record["reason"])}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(
                f"{path} line {number} is corrupt ({type(exc).__name__}: {exc})",
                hint="the lines before it are intact",
            ) from None
    return scan


def _utc(epochs: Iterable[float]) -> pd.DatetimeIndex:
    import numpy as np
    import pandas as pd

    return pd.to_datetime(np.asarray(list(epochs), dtype=np.float64), unit="s", utc=True)


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


# -- injecting -----------------------------------------------------------------------------


def _require_process(pid: int) -> None:
    try:
        psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        raise AttachError(
            f"no process with PID {pid}", hint="list the workers with `profiler workers`"
        ) from None
    except psutil.AccessDenied:
        raise AttachError(
            f"permission denied reading PID {pid}: {read_access().explain()}", hint=PTRACE_HINT
        ) from None


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
            f"PID {pid} is not a Python process the sampler can run in ({_exe(pid)}): {text}",
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


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return "executable unknown"
