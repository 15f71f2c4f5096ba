"""Driving py-spy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from profiler.capture.processes import spawn_python_until_ready, stop_pid


def version(pyspy: Path) -> str:
    result = subprocess.run(
        [str(pyspy), "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return result.stdout.strip().removeprefix("py-spy ").strip() or "unknown"


def can_read_a_python_process(pyspy: Path, timeout: float = 20.0) -> tuple[bool, str]:
    """Dump a Python we start ourselves: the smallest proof py-spy works on this host.

    Returns whether it worked and py-spy's own words when it did not.
    """
    child = spawn_python_until_ready(
        "import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n",
        timeout=timeout,
    )
    try:
        result = subprocess.run(
            [str(pyspy), "dump", "--pid", str(child.pid)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"py-spy dump did not answer within {timeout:.0f}s"
    finally:
        stop_pid(child.pid)
        child.communicate()  # reaps it and closes its pipes
    if result.returncode == 0 and f"Process {child.pid}" in result.stdout:
        return True, f"dumped a Python {sys.version_info.major}.{sys.version_info.minor} process"
    said = (result.stderr or result.stdout).strip().splitlines()
    return False, said[-1] if said else f"py-spy exited with {result.returncode}"
