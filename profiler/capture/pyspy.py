"""Driving py-spy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from profiler.capture.processes import spawn_python_until_ready, stop_pid
from profiler.capture.stacks import dump
from profiler.errors import ProfilerError


def version(pyspy: Path) -> str:
    result = subprocess.run(
        [str(pyspy), "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return result.stdout.strip().removeprefix("py-spy ").strip() or "unknown"


def can_read_a_python_process(pyspy: Path, timeout: float = 20.0) -> tuple[bool, str]:
    """Dump a Python we start ourselves: the smallest proof py-spy works on this host.

    Goes through :func:`profiler.capture.stacks.dump`, so doctor reports the same
    diagnosis (ptrace denied, not Python, ...) a real ``cpu dump`` would.
    """
    child = spawn_python_until_ready(
        "import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n",
        timeout=timeout,
    )
    try:
        dump(child.pid, pyspy=pyspy, timeout=timeout)
    except ProfilerError as exc:
        return False, exc.message
    finally:
        stop_pid(child.pid)
        child.communicate()  # reaps it and closes its pipes
    return True, f"dumped a Python {sys.version_info.major}.{sys.version_info.minor} process"
