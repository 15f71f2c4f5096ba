"""Asking a target's own interpreter what it can import.

memray must be importable by the *target's* interpreter (its venv, its
PYTHONPATH), not ours; the only reliable answer is to run that interpreter
with the target's environment and ask. Answers are cached per interpreter and
PYTHONPATH: a pool of workers shares one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil

_PROBE = """
import importlib.util, json, sys
found = importlib.util.find_spec("memray") is not None
version = None
if found:
    try:
        from importlib.metadata import version as dist_version
        version = dist_version("memray")
    except Exception:
        pass
print(json.dumps({"version": sys.version.split()[0], "memray": found, "memray_version": version}))
"""


@dataclass(frozen=True, slots=True)
class InterpreterFacts:
    python_version: str
    memray_importable: bool
    memray_version: str | None = None


def interpreter_of(proc: psutil.Process) -> str:
    """The interpreter as the process was started, so a venv's site-packages count.

    ``/proc/PID/exe`` resolves a venv's ``bin/python`` symlink to the base
    interpreter, which would not see the venv; ``argv[0]`` still names it
    (resolved against the process's own working directory when relative).
    Raises psutil's errors when the process is gone or hidden.
    """
    cmdline = proc.cmdline()
    first = cmdline[0] if cmdline else ""
    if Path(first).name.startswith(("python", "pypy")) and "/" in first:
        if first.startswith("/"):
            return first
        with contextlib.suppress(psutil.AccessDenied, OSError):
            return os.path.normpath(os.path.join(proc.cwd(), first))
    try:
        return str(proc.exe())
    except psutil.AccessDenied:
        return first


def probe_interpreter(interpreter: str, pid: int) -> InterpreterFacts | None:
    """The version and memray availability of ``pid``'s interpreter; None if it can't be run.

    A target in another mount namespace (a container) is asked there, through
    ``nsenter``: its interpreter path and its site-packages only exist in it.
    """
    return _probe(interpreter, _pythonpath(pid), tuple(mount_namespace_prefix(pid)))


def mount_namespace_prefix(pid: int) -> list[str]:
    """``nsenter -t PID -m --`` when ``pid`` sees another filesystem than we do, else nothing."""
    try:
        theirs = os.readlink(f"/proc/{pid}/ns/mnt")
        ours = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return []
    return [] if theirs == ours else ["nsenter", "--target", str(pid), "--mount", "--"]


def _pythonpath(pid: int) -> str:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    for entry in environ:
        if entry.startswith(b"PYTHONPATH="):
            return entry.split(b"=", 1)[1].decode(errors="replace")
    return ""


@cache
def _probe(interpreter: str, pythonpath: str, prefix: tuple[str, ...]) -> InterpreterFacts | None:
    env = {"PYTHONPATH": pythonpath} if pythonpath else {}
    try:
        result = subprocess.run(
            [*prefix, interpreter, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=15,
            env=env,
            check=False,
        )
        facts = json.loads(result.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    return InterpreterFacts(
        python_version=facts["version"],
        memray_importable=facts["memray"],
        memray_version=facts.get("memray_version"),
    )
