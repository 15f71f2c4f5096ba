"""Can this debugger make a process call a function? The one thing memray's attach needs.

Finding gdb on PATH is not enough: gdb 13.1 (Debian 12) attaches, lists threads and
reads memory on a CPU with AMX state, then fails the inferior call that loads
memray ("Couldn't write extended state status: Bad address"). The only honest
check is the real operation, on a throwaway child of ours: ``call (int)getpid()``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from profiler.capture.processes import spawn_python_until_ready, stop_pid

PROBE_TIMEOUT = 30.0
_IDLE_CHILD = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
_XSTATE = "extended state"


@dataclass(frozen=True, slots=True)
class CallProbe:
    """The outcome of one inferior call: ``ok``, or what went wrong and how to fix it."""

    ok: bool
    detail: str
    fix: str = ""


def probe_call(debugger: Path) -> CallProbe:
    """Make a throwaway Python child call ``getpid()`` under ``debugger`` (gdb or lldb)."""
    child = spawn_python_until_ready(_IDLE_CHILD)
    try:
        if debugger.name.startswith("lldb"):
            argv = [str(debugger), "--batch", "--no-lldbinit", "-p", str(child.pid)]
            argv += ["-o", "expr (int)getpid()"]
        else:
            argv = [str(debugger), "-p", str(child.pid), "-batch", "-nx"]
            argv += ["-ex", "call (int)getpid()"]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return CallProbe(False, f"{debugger.name} did not finish a call in {PROBE_TIMEOUT:g} s")
    finally:
        stop_pid(child.pid)
        child.communicate()
    said = done.stdout + done.stderr
    if str(child.pid) in done.stdout and _XSTATE not in said:
        return CallProbe(True, f"{debugger.name} can call functions in a process here")
    if _XSTATE in said:
        return CallProbe(
            False,
            f"{debugger} cannot call functions in a process on this CPU (AMX state): "
            "memray attach and the task sampler would fail",
            fix="use a newer gdb (gdb 18 works): pip install gdb-for-pwndbg beside profiler "
            "(found first there), or point PROFILER_GDB at one",
        )
    last = next((line for line in reversed(said.splitlines()) if line.strip()), "no output")
    return CallProbe(False, f"{debugger.name} could not call getpid() in a child: {last}")
