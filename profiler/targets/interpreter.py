"""Asking a target's own interpreter what it can import.

memray must be importable by the *target's* interpreter (its venv, its
PYTHONPATH), not ours; the only reliable answer is to run that interpreter
with the target's environment and ask. Answers are cached per interpreter and
PYTHONPATH: a pool of workers shares one.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_PROBE = (
    "import importlib.util, json, sys; "
    "print(json.dumps({'version': sys.version.split()[0], "
    "'memray': importlib.util.find_spec('memray') is not None}))"
)


@dataclass(frozen=True, slots=True)
class InterpreterFacts:
    python_version: str
    memray_importable: bool


def probe_interpreter(interpreter: str, pid: int) -> InterpreterFacts | None:
    """The version and memray availability of ``pid``'s interpreter; None if it can't be run."""
    return _probe(interpreter, _pythonpath(pid))


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
def _probe(interpreter: str, pythonpath: str) -> InterpreterFacts | None:
    env = {"PYTHONPATH": pythonpath} if pythonpath else {}
    try:
        result = subprocess.run(
            [interpreter, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=15,
            env=env,
            check=False,
        )
        facts = json.loads(result.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    return InterpreterFacts(python_version=facts["version"], memray_importable=facts["memray"])
