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


def debugger_first_on_path(name: str) -> Path | None:
    """Find debugger ``name`` as :func:`find_tool` does and put its folder first on our PATH.

    memray's attach runs the debugger by bare name (``gdb``), in our process, so the
    one it runs is whichever PATH names first. Debian 12's gdb 13.1 cannot call a
    function in a process on CPUs with AMX state ("Couldn't write extended state
    status: Bad address"), while the gdb 18 that pip installs beside us can: the
    folder we chose must come first. Idempotent, and never removed again (threads
    inject concurrently; a PATH restored by one would pull the rug from another).
    """
    found = find_tool(name)
    if found is None or not found.is_file():
        return None
    folder = str(found.parent)
    entries = os.environ.get("PATH", "").split(os.pathsep)
    if entries[:1] != [folder]:
        os.environ["PATH"] = os.pathsep.join([folder, *(e for e in entries if e != folder)])
    return found
