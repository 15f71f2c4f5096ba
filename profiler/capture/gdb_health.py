"""Whether this host's gdb can call a function inside a process: memray's attach and the task
sampler both need it.

gdb before 14 sizes the x86 XSAVE area from the features it knows; on a CPU
with AMX (Sapphire Rapids and later) the kernel's area is larger, writing the
registers back fails ("Couldn't write extended state status: Bad address"),
and every inferior call fails, in every process. memray then only says "An
unexpected error occurred", and a target may even be left damaged (a granian
master died of it). Said once, with the fix, instead.

This is the cheap, static reading (version and CPU flags) used to explain a
failed attach; ``profiler doctor`` makes the real inferior call instead
(:mod:`profiler.capture.debugger_probe`). Both look at the gdb we hand to
memray (:func:`profiler.capture.tools.find_tool`): the bundled gdb 18 when pip
installed it beside us.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

from profiler.capture.tools import find_tool

FIXED_IN = (14, 0)
_VERSION = re.compile(r"GNU gdb .*?(\d+)\.(\d+)")
HINT = (
    "use gdb 14 or later: `pip install gdb-for-pwndbg` beside profiler (found first there), "
    "or point PROFILER_GDB at one"
)


@cache
def gdb_version(gdb: str | None = None) -> tuple[int, int] | None:
    """The version of ``gdb`` (a path), else of the gdb we would hand to memray."""
    found = find_tool("gdb") if gdb is None else Path(gdb)
    if found is None or not found.is_file():
        return None
    path = str(found)
    try:
        said = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(said)
    return (int(match.group(1)), int(match.group(2))) if match else None


@cache  # a CPU's flags do not change: read /proc/cpuinfo once, not on every failed attach
def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\bamx_tile\b", text, re.MULTILINE))


def broken_inferior_calls() -> str | None:
    """Why gdb cannot call functions in processes here, or None when nothing is known wrong."""
    version = gdb_version()
    if version is None or version >= FIXED_IN or not cpu_has_amx():
        return None
    return (
        f"gdb {version[0]}.{version[1]} cannot call functions in processes on this CPU (AMX "
        "registers; fixed in gdb 14), so memray's attach and the task sampler fail"
    )
