"""Finding the external tools we drive, wherever pip put them.

``pip install profiler`` puts ``py-spy`` next to our own interpreter, which is
not on PATH when the venv is not activated; look there first.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DEBUGGERS = ("gdb", "lldb")


def find_tool(name: str) -> Path | None:
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
