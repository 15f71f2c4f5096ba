"""Timestamped stack samples from ``py-spy dump --json``.

py-spy's ``record`` formats carry no usable wall-clock time, so stacks could
not be lined up with ``pg_stat_activity``. Instead a worker is dumped once per
interval and each thread's stack becomes a :class:`StackSample` stamped with
our own UTC clock just before the dump started; ``dump_seconds`` says how
stale the stamp can be (the stack was read somewhere inside that window).

A dump takes 13-40 ms (1-50 threads; mostly py-spy starting up), so about 25-75
dumps a second per worker back to back; at 1-10 Hz the target's own rate did
not move beyond this VM's noise. ``benchmarks/stack_dumps.py`` measures both.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from profiler.capture.processes import executable, is_running
from profiler.capture.ptrace import PTRACE_HINT, read_access
from profiler.capture.tools import find_tool
from profiler.errors import AttachError, ToolMissingError

PYSPY_INSTALL_HINT = "pip install py-spy (it is a dependency of profiler), or pass its path"
MAX_CONSECUTIVE_FAILURES = 3
TORN_READ_RETRIES = 2  # nonblocking dumps that read freed memory, tried again at once


@dataclass(frozen=True, slots=True)
class Local:
    """A local variable of a frame, as py-spy's ``--locals`` reports it.

    ``repr`` is the target's own repr and may hold secrets (DSNs, tokens):
    locals are only read when asked for, and never written by default.
    """

    name: str
    repr: str | None
    arg: bool


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a thread's stack, field names as py-spy's JSON has them.

    ``module`` is only set for native frames (``--native``), where it is the
    shared library and ``line`` is 0. ``short_filename`` is py-spy's
    abbreviation (``t.py`` for ``/srv/app/t.py``), which its own collapsed
    output uses.
    """

    name: str
    filename: str
    line: int
    module: str | None
    short_filename: str | None = None
    locals: tuple[Local, ...] | None = None

    @property
    def label(self) -> str:
        """``name (file:line)``, or ``name (module)`` without a line, as ``--format raw`` writes."""
        where = self.short_filename or os.path.basename(self.module or self.filename)
        if self.line:
            return f"{self.name} ({where}:{self.line})"
        return f"{self.name} ({where})" if where else self.name


@dataclass(frozen=True, slots=True)
class StackSample:
    """One thread of one worker at one instant of our (UTC) clock.

    ``frames`` are innermost first, as py-spy gives them: ``frames[0]`` is
    where the thread is now, ``frames[-1]`` is its entry point. ``thread_id``
    is the pthread id py-spy reports; ``os_thread_id`` is the kernel TID (the
    one in ``/proc/PID/task``). ``active`` is py-spy's guess that the thread is
    running rather than waiting (sleeping, blocked on I/O or a lock).
    """

    worker_pid: int
    thread_id: int
    thread_name: str | None
    taken_at: datetime
    dump_seconds: float
    active: bool
    owns_gil: bool
    frames: tuple[Frame, ...]
    os_thread_id: int | None = None

    def folded(self) -> str:
        """Collapsed-stack notation, outermost first: what flamegraph tools read."""
        return ";".join(frame.label for frame in reversed(self.frames))


@dataclass(frozen=True, slots=True)
class DumpFailure:
    """A dump of ``worker_pid`` failed at ``taken_at``; recorded, not hidden.

    ``dropped`` says the worker will not be dumped again (it exited, or kept
    failing).
    """

    worker_pid: int
    taken_at: datetime
    reason: str
    dropped: bool = True


def dump_command(
    pid: int,
    *,
    pyspy: Path | None = None,
    native: bool = False,
    locals_: bool = False,
    nonblocking: bool = False,
) -> list[str]:
    """The exact ``py-spy dump`` command :func:`dump` runs, for ``-v`` (``shlex.join`` it)."""
    argv = [str(resolve_pyspy(pyspy)), "dump", "--json", "--pid", str(pid)]
    if native:
        argv.append("--native")
    if locals_:
        argv.append("--locals")
    if nonblocking:
        argv.append("--nonblocking")
    return argv


def dump(
    pid: int,
    *,
    pyspy: Path | None = None,
    native: bool = False,
    locals_: bool = False,
    nonblocking: bool = False,
    timeout: float = 10.0,
) -> list[StackSample]:
    """Every thread of ``pid`` now, one :class:`StackSample` each.

    Raises :class:`ToolMissingError` when py-spy cannot be found and
    :class:`AttachError` (diagnosed: no such process, not Python, ptrace
    denied, or py-spy's own words) when the dump fails.
    """
    argv = dump_command(pid, pyspy=pyspy, native=native, locals_=locals_, nonblocking=nonblocking)
    for _ in range(1 + (TORN_READ_RETRIES if nonblocking else 0)):
        taken_at, result, dump_seconds = _run_dump(pid, argv, timeout)
        if result.returncode == 0 or not is_torn_read(result.stderr):
            break
    if result.returncode != 0:
        raise diagnose(pid, result.stderr or result.stdout, result.returncode)
    try:
        threads = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AttachError(
            f"py-spy dump of PID {pid} printed something that is not JSON: {result.stdout[:200]!r}",
            hint="check the py-spy version (`py-spy --version`); 0.3.14 or later is needed",
        ) from exc
    return [_sample(pid, thread, taken_at, dump_seconds) for thread in threads]


def is_torn_read(stderr: str) -> bool:
    """Whether py-spy failed because the memory it read changed under it.

    Without pausing the worker (``--nonblocking``) py-spy may follow a
    pointer the interpreter has just freed: ``Bad address (os error 14)``
    from ``process_vm_readv``. The next read, a moment later, usually works.
    """
    return "os error 14" in stderr or "Bad address" in stderr


def _run_dump(
    pid: int, argv: list[str], timeout: float
) -> tuple[datetime, subprocess.CompletedProcess[str], float]:
    """One py-spy dump: when it started, what it said, how long it took."""
    # py-spy honours RUST_BACKTRACE; a backtrace would bury its one useful line.
    env = {**os.environ, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}
    taken_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(f"py-spy not found at {argv[0]}", hint=PYSPY_INSTALL_HINT) from exc
    except PermissionError as exc:
        raise ToolMissingError(
            f"py-spy at {argv[0]} is not executable", hint=PYSPY_INSTALL_HINT
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise AttachError(
            f"py-spy dump of PID {pid} did not answer within {timeout:g}s",
            hint="retry with --nonblocking, or a longer timeout; see: " + shlex.join(argv),
        ) from exc
    return taken_at, result, time.perf_counter() - started


def dump_workers(
    pids: Sequence[int],
    *,
    pyspy: Path | None = None,
    native: bool = False,
    locals_: bool = False,
    nonblocking: bool = False,
    timeout: float = 10.0,
) -> tuple[list[StackSample], dict[int, AttachError]]:
    """Every worker once, concurrently: the samples, and why each failed worker failed.

    One worker that cannot be read must not hide the others (``cpu dump``
    warns and goes on); a missing py-spy fails them all, so it raises
    :class:`ToolMissingError` before anything runs.
    """
    resolved = resolve_pyspy(pyspy)
    unique = list(dict.fromkeys(pids))
    samples: list[StackSample] = []
    failures: dict[int, AttachError] = {}
    if not unique:
        return samples, failures

    def one(pid: int) -> list[StackSample] | AttachError:
        try:
            return dump(
                pid,
                pyspy=resolved,
                native=native,
                locals_=locals_,
                nonblocking=nonblocking,
                timeout=timeout,
            )
        except AttachError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(len(unique), 32)) as pool:
        for pid, outcome in zip(unique, pool.map(one, unique), strict=True):
            if isinstance(outcome, AttachError):
                failures[pid] = outcome
            else:
                samples.extend(outcome)
    return samples, failures


def fold(samples: Iterable[StackSample]) -> list[tuple[str, int, list[int]]]:
    """Identical stacks counted once: ``(folded stack, count, sorted worker pids)``.

    Most common first (ties by stack, so output is deterministic): "14 threads
    in list_tools -> httpx.AsyncClient.send" is the first line to read.
    """
    counts: Counter[str] = Counter()
    pids: dict[str, set[int]] = {}
    for sample in samples:
        stack = sample.folded()
        counts[stack] += 1
        pids.setdefault(stack, set()).add(sample.worker_pid)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(stack, count, sorted(pids[stack])) for stack, count in ordered]


def periodic_dumps(
    pids: Sequence[int],
    *,
    interval: float,
    seconds: float | None,
    stop: threading.Event | None = None,
    pyspy: Path | None = None,
    native: bool = False,
    nonblocking: bool = False,
    timeout: float | None = None,
) -> Iterator[StackSample | DumpFailure]:
    """Dump every pid every ``interval`` seconds, for ``seconds`` (None: until ``stop``).

    Rounds start on a fixed-rate grid (``start + k * interval``); a round that
    overruns skips the ticks it missed instead of drifting or bursting, so
    samples stay evenly spread for correlation. Workers of one round are
    dumped concurrently (each dump is a separate py-spy process that mostly
    waits on ptrace), so one slow worker does not delay the others' stamps.

    A worker that exited yields one :class:`DumpFailure` and is dropped; one
    that is alive but fails yields a failure each time and is dropped after
    ``MAX_CONSECUTIVE_FAILURES`` in a row. A missing py-spy raises at once.
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    stop = stop or threading.Event()
    resolved = resolve_pyspy(pyspy)  # ToolMissingError now, not once per worker
    per_dump_timeout = timeout if timeout is not None else max(interval * 4, 5.0)
    alive = list(dict.fromkeys(pids))
    failures = dict.fromkeys(alive, 0)
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    with ThreadPoolExecutor(max_workers=max(1, min(len(alive), 32))) as pool:
        tick = 0
        while alive and not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return
            futures = [
                pool.submit(
                    _dump_or_failure,
                    pid,
                    resolved,
                    native,
                    nonblocking,
                    per_dump_timeout,
                    failures[pid] + 1 >= MAX_CONSECUTIVE_FAILURES,
                )
                for pid in alive
            ]
            for pid, future in zip(list(alive), futures, strict=True):
                outcome = future.result()
                if isinstance(outcome, DumpFailure):
                    failures[pid] += 1
                    if outcome.dropped:
                        alive.remove(pid)
                    yield outcome
                else:
                    failures[pid] = 0
                    yield from outcome
            elapsed = time.monotonic() - start
            tick = max(tick + 1, math.floor(elapsed / interval) + 1)
            next_at = start + tick * interval
            if deadline is not None and next_at >= deadline:
                return
            stop.wait(max(0.0, next_at - time.monotonic()))


def _dump_or_failure(
    pid: int, pyspy: Path, native: bool, nonblocking: bool, timeout: float, last_chance: bool
) -> list[StackSample] | DumpFailure:
    taken_at = datetime.now(timezone.utc)
    try:
        return dump(pid, pyspy=pyspy, native=native, nonblocking=nonblocking, timeout=timeout)
    except AttachError as exc:
        gone = not is_running(pid)
        return DumpFailure(pid, taken_at, exc.message, dropped=gone or last_chance)


def resolve_pyspy(pyspy: Path | None) -> Path:
    path = pyspy if pyspy is not None else find_tool("py-spy")
    if path is None:
        raise ToolMissingError("py-spy not found beside Python or on PATH", hint=PYSPY_INSTALL_HINT)
    if not path.is_file():
        raise ToolMissingError(f"py-spy not found at {path}", hint=PYSPY_INSTALL_HINT)
    return path


def _said(output: str) -> str:
    """py-spy's own words: its ``Error:`` line and its last line (the root cause), no backtrace."""
    text = output.split("Stack backtrace:", 1)[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    last = lines[-1].removeprefix("Error: ")
    number, _, rest = last.partition(": ")
    if number.isdigit():  # "1: Permission denied (os error 13)" in anyhow's "Caused by:" list
        last = rest
    error = next((line.removeprefix("Error: ") for line in lines if line.startswith("Error:")), "")
    return last if not error or error == last else f"{error}: {last}"


def diagnose(pid: int, output: str, returncode: int) -> AttachError:
    """Why a dump failed, in the order memray's attach checks: exists, Python, ptrace."""
    said = _said(output)
    lowered = output.lower()
    if not is_running(pid):
        return AttachError(
            f"no process with PID {pid} (py-spy: {said})",
            hint="list the workers with `profiler workers`",
        )
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return AttachError(
            f"permission denied attaching to PID {pid}: {read_access().explain()} (py-spy: {said})",
            hint=PTRACE_HINT,
        )
    if "python" in lowered and ("failed to find" in lowered or "not a python" in lowered):
        return AttachError(
            f"PID {pid} is not a Python process ({executable(pid)}; py-spy: {said})",
            hint="point at a gateway worker; `profiler workers` lists them",
        )
    return AttachError(
        f"py-spy dump of PID {pid} failed with exit code {returncode}: {said}",
        hint="retry; if it persists, run the command with -v to see py-spy's full output",
    )


def _sample(
    pid: int, thread: dict[str, object], taken_at: datetime, dump_seconds: float
) -> StackSample:
    frames = thread.get("frames") or []
    assert isinstance(frames, list)
    name = thread.get("thread_name")
    os_tid = thread.get("os_thread_id")
    return StackSample(
        worker_pid=pid,
        thread_id=int(str(thread["thread_id"])),
        thread_name=name if isinstance(name, str) else None,
        taken_at=taken_at,
        dump_seconds=dump_seconds,
        active=bool(thread.get("active", True)),
        owns_gil=bool(thread.get("owns_gil", False)),
        frames=tuple(_frame(frame) for frame in frames),
        os_thread_id=os_tid if isinstance(os_tid, int) else None,
    )


def _frame(raw: dict[str, object]) -> Frame:
    module = raw.get("module")
    short = raw.get("short_filename")
    line = raw.get("line")
    raw_locals = raw.get("locals")
    locals_ = None
    if isinstance(raw_locals, list):
        locals_ = tuple(
            Local(
                name=str(local.get("name", "")),
                repr=local["repr"] if isinstance(local.get("repr"), str) else None,
                arg=bool(local.get("arg", False)),
            )
            for local in raw_locals
            if isinstance(local, dict)
        )
    return Frame(
        name=str(raw.get("name", "?")),
        filename=str(raw.get("filename", "")),
        line=line if isinstance(line, int) else 0,
        module=module if isinstance(module, str) else None,
        short_filename=short if isinstance(short, str) else None,
        locals=locals_,
    )
