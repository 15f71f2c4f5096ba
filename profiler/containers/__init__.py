"""Engine adapters: from ``--container NAME`` or ``--pod NAME`` to the host PIDs of its workers.

Two strategies reach a worker in a container:

* **from the host** (what these adapters resolve to): ask the engine which
  processes the container runs (``docker inspect`` / ``docker top``, or
  ``kubectl get pod`` then ``/proc/*/cgroup`` on this node) and profile them by
  host PID; :mod:`profiler.targets.namespaces` enters their namespaces where
  a tool must run next to them;
* **inside** (a pod on another node, no root on the host): the exact
  ``docker exec`` / ``kubectl exec`` / ``kubectl cp`` command lines that copy a
  tool in, run it next to the workers and copy the results out
  (:func:`profiler.containers.inside.plan`).

Every external command goes through a :data:`Runner`, so the adapters are
tested on the exact command lines they build and on recorded outputs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import AttachError, ToolMissingError

Runner = Callable[[list[str]], str]
ENGINES = ("docker", "podman")
RUN_TIMEOUT_SECONDS = 30.0
_ID_PREFIX = re.compile(r"^[a-z0-9-]+://")


@dataclass(frozen=True, slots=True)
class ContainerTarget:
    """One container resolved to this host's processes.

    ``label`` names it in listings, findings and the session manifest:
    ``pod/NAME`` for a Kubernetes pod (its namespace and container apart),
    ``docker/NAME`` or ``podman/NAME`` for an engine's container.
    """

    engine: str  # docker, podman or kubernetes
    name: str  # the container's name, or the pod's
    container_id: str
    host_pids: tuple[int, ...]
    namespace: str | None = None  # Kubernetes namespace
    container: str | None = None  # the container's name within its pod

    @property
    def label(self) -> str:
        if self.engine == "kubernetes":
            return f"pod/{self.name}"
        return f"{self.engine}/{self.name}"


def run_tool(argv: list[str]) -> str:
    """Run an engine's CLI; its stdout. Missing tool: exit 5; its own failure: exit 3."""
    if shutil.which(argv[0]) is None:
        raise ToolMissingError(
            f"{argv[0]} is not on PATH: it is how --container / --pod find the workers",
            hint=f"install {argv[0]}, or pass the workers' host PIDs with --pid",
        )
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise AttachError(
            f"{argv[0]} did not answer within {RUN_TIMEOUT_SECONDS:g}s: {' '.join(argv)}",
            hint="check the engine (docker info / kubectl cluster-info)",
        ) from None
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise AttachError(
            f"{' '.join(argv[:3])} failed: {said[-1] if said else result.returncode}",
            hint="check the name (docker ps / kubectl get pods), the --namespace and --context",
        )
    return result.stdout


def bare_id(container_id: str) -> str:
    """A runtime's container id without its scheme.

    >>> bare_id("containerd://4f0c2b9e1d")
    '4f0c2b9e1d'
    >>> bare_id("4f0c2b9e1d")
    '4f0c2b9e1d'
    """
    return _ID_PREFIX.sub("", container_id)


def pids_in_cgroup(container_id: str, *, proc: Path = Path("/proc")) -> list[int]:
    """Host PIDs whose ``/proc/PID/cgroup`` names ``container_id`` (Docker, containerd,
    CRI-O and Podman all put the full id in the cgroup path), sorted."""
    wanted = bare_id(container_id)
    return sorted(pid for pid, text in _each_process(proc, "cgroup") if wanted in text)


def descendants(pid: int, *, proc: Path = Path("/proc")) -> list[int]:
    """``pid`` and every process below it, from ``/proc/*/stat`` (host numbering), sorted."""
    children: dict[int, list[int]] = {}
    for child, stat in _each_process(proc, "stat"):
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(child)
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, ()))
    return sorted(found)


def _each_process(proc: Path, name: str) -> Iterator[tuple[int, str]]:
    """(PID, text of ``/proc/PID/<name>``) for every process whose file is readable."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / name).read_text()
        except OSError:
            continue
        yield int(entry.name), text
