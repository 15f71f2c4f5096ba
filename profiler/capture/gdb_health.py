"""Whether this host's gdb can call a function inside a process: memray's attach and the task
sampler both need it.

gdb before 14 sizes the x86 XSAVE area from the features it knows; on a CPU
with AMX (Sapphire Rapids and later) the kernel's area is larger, writing the
registers back fails ("Couldn't write extended state status: Bad address"),
and every inferior call fails, in every process. memray then only says "An
unexpected error occurred", and a target may even be left damaged (a granian
master died of it). Said once, with the fix, instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

FIXED_IN = (14, 0)
_VERSION = re.compile(r"GNU gdb .*?(\d+)\.(\d+)")
HINT = (
    "install gdb 14 or later first on PATH (Debian trixie's gdb, or "
    "`pip install gdb-for-pwndbg` and put its bin/ first on PATH)"
)


@cache
def gdb_version(gdb: str = "gdb") -> tuple[int, int] | None:
    path = shutil.which(gdb)
    if path is None:
        return None
    try:
        said = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(said)
    return (int(match.group(1)), int(match.group(2))) if match else None


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
