"""Finding the external tools we drive, wherever pip put them.

pip puts ``py-spy`` and the bundled ``gdb`` (the ``gdb-for-pwndbg`` wheel) next to
our own interpreter, which is not on PATH when the venv is not activated; look
there first.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DEBUGGERS = ("gdb", "lldb")


def override_variable(name: str) -> str:
    """``PROFILER_PYSPY`` for py-spy, ``PROFILER_GDB`` for gdb: where a user pins a tool."""
    return "PROFILER_" + name.upper().replace("-", "")


def find_tool(name: str) -> Path | None:
    """The tool named by its override variable (as given, even if missing, so the
    error names it), else beside our Python, else on PATH."""
    pinned = os.environ.get(override_variable(name))
    if pinned:
        return Path(pinned)
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return beside_python
    found = shutil.which(name)
    return Path(found) if found else None


def find_debugger() -> Path | None:
    """memray's attach injects through gdb or lldb; either will do."""
    for name in DEBUGGERS:
        path = find_tool(name)
        if path:
            return path
    return None
