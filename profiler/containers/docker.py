"""``--container NAME [--engine docker|podman]``: a container's processes by host PID.

``docker inspect`` gives the container's id, whether it runs, its main
process's host PID (``State.Pid``) and the settings that decide whether
profiling can work inside it (``HostConfig.CapAdd``, ``SecurityOpt``,
``ReadonlyRootfs``). ``docker top NAME -eo pid`` (``podman top NAME hpid``)
lists every process of the container by host PID; when it cannot, the
processes below ``State.Pid`` in ``/proc`` are the same set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.containers import ENGINES, ContainerTarget, Runner, descendants, run_tool
from profiler.errors import AttachError, UsageError


@dataclass(frozen=True, slots=True)
class Inspected:
    """What ``docker inspect`` says about one container, as far as profiling cares."""

    id: str
    name: str
    running: bool
    pid: int  # host PID of its main process; 0 when it is not running
    cap_add: tuple[str, ...]
    security_opt: tuple[str, ...]
    read_only: bool
    image: str

    @property
    def has_ptrace(self) -> bool:
        """True when the container was started with SYS_PTRACE (or ALL) added."""
        return any(
            cap.upper().removeprefix("CAP_") in ("SYS_PTRACE", "ALL") for cap in self.cap_add
        )

    @property
    def seccomp_unconfined(self) -> bool:
        return any(opt.replace(":", "=") == "seccomp=unconfined" for opt in self.security_opt)


def inspect_command(name: str, engine: str = "docker") -> list[str]:
    """``docker inspect`` of one container, JSON.

    >>> inspect_command("gateway")
    ['docker', 'inspect', '--type', 'container', 'gateway']
    """
    return [_engine(engine), "inspect", "--type", "container", name]


def top_command(name: str, engine: str = "docker") -> list[str]:
    """Every process of the container, host PIDs only (docker's ``ps`` options, podman's
    ``hpid`` descriptor).

    >>> top_command("gateway")
    ['docker', 'top', 'gateway', '-eo', 'pid']
    >>> top_command("gateway", "podman")
    ['podman', 'top', 'gateway', 'hpid']
    """
    if _engine(engine) == "podman":
        return ["podman", "top", name, "hpid"]
    return ["docker", "top", name, "-eo", "pid"]


def parse_inspect(text: str) -> Inspected:
    """The first container of ``docker inspect``'s JSON array."""
    try:
        data: list[dict[str, Any]] = json.loads(text)
        item = data[0]
        state = item["State"]
        host = item.get("HostConfig") or {}
        return Inspected(
            id=str(item["Id"]),
            name=str(item.get("Name", "")).lstrip("/"),
            running=bool(state.get("Running")),
            pid=int(state.get("Pid") or 0),
            cap_add=tuple(host.get("CapAdd") or ()),
            security_opt=tuple(host.get("SecurityOpt") or ()),
            read_only=bool(host.get("ReadonlyRootfs")),
            image=str((item.get("Config") or {}).get("Image", "")),
        )
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AttachError(
            f"could not read the engine's inspect output ({type(exc).__name__}: {exc})",
            hint="run the inspect command by hand (profiler -v shows it)",
        ) from None


def parse_top(text: str) -> list[int]:
    """Host PIDs from ``docker top NAME -eo pid`` / ``podman top NAME hpid`` (header first).

    >>> parse_top("PID\\n31337\\n31402\\n31403\\n")
    [31337, 31402, 31403]
    >>> parse_top("HPID\\n4242\\n")
    [4242]
    """
    pids = []
    for line in text.splitlines()[1:]:
        field = line.strip().split(None, 1)[0] if line.strip() else ""
        if field.isdigit():
            pids.append(int(field))
    return sorted(pids)


def resolve(
    name: str,
    engine: str = "docker",
    *,
    run: Runner = run_tool,
    proc: Path = Path("/proc"),
) -> ContainerTarget:
    """The container's processes by host PID; :class:`AttachError` when it is not running."""
    inspected = parse_inspect(run(inspect_command(name, engine)))
    if not inspected.running or inspected.pid <= 0:
        raise AttachError(
            f"{engine} container {name} is not running",
            hint=f"start it ({engine} start {name}), or list running ones: {engine} ps",
        )
    try:
        pids = parse_top(run(top_command(name, engine)))
    except AttachError:
        pids = []
    if not pids:  # e.g. a remote engine's top: fall back to our own /proc
        pids = descendants(inspected.pid, proc=proc)
    return ContainerTarget(_engine(engine), inspected.name or name, inspected.id, tuple(pids))


def exec_command(
    name: str, argv: list[str], engine: str = "docker", *, user: str | None = None
) -> list[str]:
    """``docker exec [-u USER] NAME ARGV...``: run a command next to the workers.

    >>> exec_command("gateway", ["/tmp/py-spy", "dump", "--pid", "7"])
    ['docker', 'exec', 'gateway', '/tmp/py-spy', 'dump', '--pid', '7']
    """
    user_flag = ["-u", user] if user else []
    return [_engine(engine), "exec", *user_flag, name, *argv]


def copy_in_command(source: str, name: str, destination: str, engine: str = "docker") -> list[str]:
    """``docker cp`` a file of ours into the container.

    >>> copy_in_command("/usr/local/bin/py-spy", "gateway", "/tmp/py-spy")
    ['docker', 'cp', '/usr/local/bin/py-spy', 'gateway:/tmp/py-spy']
    """
    return [_engine(engine), "cp", source, f"{name}:{destination}"]


def copy_out_command(name: str, source: str, destination: str, engine: str = "docker") -> list[str]:
    """``docker cp`` a file of the container out to ours.

    >>> copy_out_command("gateway", "/tmp/profile.svg", "profiles/")
    ['docker', 'cp', 'gateway:/tmp/profile.svg', 'profiles/']
    """
    return [_engine(engine), "cp", f"{name}:{source}", destination]


def _engine(engine: str) -> str:
    if engine not in ENGINES:
        raise UsageError(f"unknown --engine {engine!r}", hint="use docker or podman")
    return engine
