"""Everything memray's attach needs, checked per worker before anything is injected.

memray attaches by making gdb (or lldb) call into the target's interpreter
and run ``import memray`` *there*. When one precondition is missing the user
gets a crash, a hang or a worker left half-instrumented (memray #846, #745,
#925, #450). So each is checked first, in the order a fix has to happen, and
the first that fails is the worker's verdict; nothing touches a worker that
did not pass.

1. the process exists and is Python;
2. a debugger (gdb or lldb) is installed here;
3. ptrace is allowed (Yama scope and CAP_SYS_PTRACE);
4. the target's own interpreter can ``import memray`` (asked of that
   interpreter, with the target's PYTHONPATH, in its mount namespace);
5. its memray is the version we drive: the attach protocol and the capture
   format are version-specific.

A worker in other namespaces (a container) is attached from inside them
(:mod:`profiler.targets.namespaces`): the debugger must exist in *its*
filesystem, and its capture is written in a folder of its filesystem it can
write (``/tmp/profiler-captures``, else ``/dev/shm/profiler-captures``), fetched afterwards.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import psutil

from profiler.capture.processes import readable_process
from profiler.capture.ptrace import require_ptrace
from profiler.capture.tools import DEBUGGERS, find_debugger
from profiler.errors import AttachError, ProfilerError, ToolMissingError
from profiler.targets.interpreter import InterpreterFacts, interpreter_of, probe_interpreter
from profiler.targets.namespaces import (
    Namespaces,
    find_inside,
    inside_env,
    namespaces_of,
    scratch_dir,
    visible_inside,
)

NO_DEBUGGER_INSIDE_HINT = (
    "add gdb to the image (apt-get install -y gdb / apk add gdb / dnf install gdb), or attach "
    "from a debug container that has it: kubectl debug -it POD --image=IMAGE-WITH-GDB "
    "--target=CONTAINER --profile=general"
)


def our_memray_version() -> str:
    from importlib.metadata import version

    return version("memray")


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker that passed every check, with what the checks learned."""

    pid: int
    interpreter: str
    python_version: str
    memray_version: str
    debugger: Path
    lent: bool = False  # memray comes from our environment for this capture (--lend-memray)
    # Where the worker lives; memray runs inside its namespaces when they are not ours.
    namespaces: Namespaces | None = None
    # A folder of the worker's own filesystem it writes its capture into (other filesystem).
    scratch: PurePosixPath | None = field(default=None)

    @property
    def isolated(self) -> bool:
        return self.namespaces is not None and self.namespaces.isolated

    @property
    def ns_pid(self) -> int:
        """The PID to give memray: the worker's own number when memray runs in its namespace."""
        return self.namespaces.ns_pid if self.namespaces and self.isolated else self.pid

    def memray_env(self) -> dict[str, str]:
        """The environment memray runs in, with the chosen debugger first on PATH.

        Ours, for a local worker; the worker's own PATH and PYTHONPATH for one in
        another filesystem (``debugger`` is then a path of *its* filesystem).
        """
        base = inside_env(self.pid) if self.isolated else dict(os.environ)
        if self.lent and self.isolated:
            base.pop("PYTHONPATH", None)  # our interpreter, our packages
        path = base.get("PATH", "")
        return {**base, "PATH": f"{self.debugger.parent}{os.pathsep}{path}"}


def check(pid: int, *, lend: bool = False) -> Ready:
    """The worker's verdict: :class:`Ready`, or the first failed check raised with its fix.

    Raises :class:`AttachError` (exit 3) for the worker's own problems and
    :class:`ToolMissingError` (exit 5) when no debugger is installed here.
    """
    interpreter = _interpreter(pid)
    space = namespaces_of(pid)
    if space.isolated:
        return _check_isolated(pid, interpreter, space, lend=lend)
    debugger = find_debugger()
    if debugger is None or not debugger.is_file():
        where = f" (none at {debugger})" if debugger else ""
        raise ToolMissingError(
            f"memray attaches through gdb or lldb, and neither is installed{where}",
            hint="install gdb (apt install gdb / dnf install gdb), or point PROFILER_GDB at it",
        )
    require_ptrace(pid)
    facts = _facts(pid, interpreter)
    if lend and not facts.memray_importable:
        _require_same_python(pid, facts)
        return Ready(pid, interpreter, facts.python_version, our_memray_version(), debugger, True)
    return Ready(pid, interpreter, facts.python_version, _memray_version(pid, facts), debugger)


def _check_isolated(pid: int, interpreter: str, space: Namespaces, *, lend: bool) -> Ready:
    """A worker in other namespaces: memray and the debugger run in them, next to it.

    So the debugger must be in the worker's filesystem, memray importable there
    (or, lent, our environment visible there at the same path), and the worker
    must be able to write somewhere in its own filesystem.
    """
    debugger = Path(find_inside(space, DEBUGGERS) or "")
    if not debugger.name:
        raise AttachError(
            f"no gdb or lldb in the filesystem of {space.label()}: memray attaches through "
            "one, run inside the container",
            hint=NO_DEBUGGER_INSIDE_HINT,
        )
    require_ptrace(pid)
    facts = _facts(pid, interpreter)
    lent = lend and not facts.memray_importable
    if lent:
        _require_same_python(pid, facts)
        if not visible_inside(space, sys.prefix):
            raise AttachError(
                f"cannot lend memray to {space.label()}: our environment ({sys.prefix}) is not "
                "in its filesystem; nothing was injected",
                hint=f"install memray=={our_memray_version()} in the image, or mount our "
                f"environment at the same path ({sys.prefix}) into the container",
            )
        version = our_memray_version()
    else:
        version = _memray_version(pid, facts)
    scratch = None
    if space.other_filesystem:
        uids, gids = _ids(pid)
        scratch = scratch_dir(space, uids, gids)
    return Ready(pid, interpreter, facts.python_version, version, debugger, lent, space, scratch)


def _facts(pid: int, interpreter: str) -> InterpreterFacts:
    facts = probe_interpreter(interpreter, pid)
    if facts is None:
        raise AttachError(
            f"cannot run PID {pid}'s interpreter {interpreter} to ask whether it has memray",
            hint="check the path exists where the worker runs (containers: its own filesystem)",
        )
    return facts


def _ids(pid: int) -> tuple[int, int]:
    try:
        proc = psutil.Process(pid)
        return proc.uids().effective, proc.gids().effective
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0, 0


def check_all(
    pids: list[int], *, lend: bool = False
) -> tuple[list[Ready], dict[int, ProfilerError]]:
    """Every worker's verdict; a missing debugger fails all of them, so it raises at once."""
    ready: list[Ready] = []
    failed: dict[int, ProfilerError] = {}
    for pid in pids:
        try:
            ready.append(check(pid, lend=lend))
        except ToolMissingError:
            raise
        except ProfilerError as exc:
            failed[pid] = exc
    return ready, failed


def _interpreter(pid: int) -> str:
    with readable_process(pid) as proc:
        return interpreter_of(proc)


def _same_python(facts: InterpreterFacts) -> bool:
    """Our memray's compiled extension loads in the worker only for the same major.minor."""
    return facts.python_version.rsplit(".", 1)[0] == ".".join(map(str, sys.version_info[:2]))


def _require_same_python(pid: int, facts: InterpreterFacts) -> None:
    if not _same_python(facts):
        ours = ".".join(map(str, sys.version_info[:3]))
        raise AttachError(
            f"cannot lend memray to PID {pid}: it runs Python {facts.python_version}, "
            f"ours is {ours}; nothing was injected",
            hint=f"install memray=={our_memray_version()} in the worker's environment",
        )


def _memray_version(pid: int, facts: InterpreterFacts) -> str:
    ours = our_memray_version()
    if not facts.memray_importable:
        lend = " or pass --lend-memray to lend it ours" if _same_python(facts) else ""
        raise AttachError(
            f"memray is not importable by PID {pid}'s interpreter "
            f"(Python {facts.python_version}); nothing was injected",
            hint=f"install memray=={ours} in the worker's environment{lend}",
        )
    if facts.memray_version != ours:
        raise AttachError(
            f"PID {pid} has memray {facts.memray_version or 'of unknown version'}, "
            f"we drive {ours}; nothing was injected",
            hint=f"install memray=={ours} in the worker's environment "
            f"(or run profiler from an environment with memray=={facts.memray_version})",
        )
    return ours
