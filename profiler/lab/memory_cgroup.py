"""A memory limit on the lab's workers: a cgroup of their own, so the kernel OOM-kills for real.

``lab up --memory-limit 512MiB`` creates one memory cgroup for the gateway's
workers (all of them together, as a container's limit holds a whole gunicorn),
sets its limit, and tells the workers its path through the environment; each
worker moves itself in as its application is created (:func:`join_from_env`),
so the replacement gunicorn forks after an OOM kill joins too, while the master,
which never builds the application, stays out: the kernel kills a worker and
the master restarts it, as in the seed incident. ``lab down`` removes the cgroup.

Where: cgroup v2 (``memory.max``; ``/sys/fs/cgroup`` or ``/sys/fs/cgroup/unified``
with the memory controller) at its root, else v1 (``/sys/fs/cgroup/memory``,
``memory.limit_in_bytes``) under our own memory cgroup (so a limit above ours
still holds), else at its root. Where none is writable
(no root, a read-only ``/sys/fs/cgroup`` in a container) :class:`UnsupportedHost`
(exit 5, as a missing tool) says so in one line. The OOM evidence is read back by
:mod:`profiler.targets.oom`, as for any worker.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import UnsupportedHost

CGROUP_ROOT = Path("/sys/fs/cgroup")
ENV = "PROFILER_LAB_MEMORY_CGROUP"
REMOVE_SECONDS = 5.0  # a stopped worker leaves its cgroup a moment after it exits
HINT = (
    "run the lab as root on a host with the memory cgroup controller mounted read-write "
    "(cgroup v2, or v1 at /sys/fs/cgroup/memory), or leave out --memory-limit"
)


@dataclass(frozen=True, slots=True)
class MemoryCgroup:
    """The workers' cgroup: its folder, its version (1 or 2) and its limit in bytes."""

    path: Path
    version: int
    limit: int

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"


def create(name: str, limit: int, *, root: Path = CGROUP_ROOT) -> MemoryCgroup:
    """A new memory cgroup ``name`` limited to ``limit`` bytes; :class:`UnsupportedHost`
    when no memory hierarchy here lets us make one."""
    problems: list[str] = []
    for version, parent in _parents(root):
        folder = parent / name
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror}")
            continue
        found = MemoryCgroup(folder, version, limit)
        try:
            (folder / found.limit_file).write_text(f"{limit}\n")
            if version == 1:
                # Pages a worker faulted before it joined move with it (v1 only; v2 never
                # moves charges): its RSS and the cgroup's usage then tell the same story.
                with contextlib.suppress(OSError):
                    (folder / "memory.move_charge_at_immigrate").write_text("1\n")
        except OSError as exc:
            problems.append(f"{folder / found.limit_file}: {exc.strerror}")
            _rmdir(folder)
            continue
        return found
    why = "; ".join(problems) if problems else "no memory cgroup hierarchy is mounted"
    raise UnsupportedHost(f"cannot set a memory limit on the lab's workers: {why}", hint=HINT)


def join(path: Path, pid: int) -> None:
    """Move ``pid`` into the cgroup at ``path``."""
    (path / "cgroup.procs").write_text(f"{pid}\n")


def join_from_env() -> None:
    """In a gateway worker: join the cgroup ``lab up`` named in :data:`ENV`, if any.

    Raises ``OSError`` when it cannot: a worker outside its limit would make the
    scenario lie, so it fails to start and the lab says why."""
    path = os.environ.get(ENV)
    if path:
        join(Path(path), os.getpid())


def remove(path: Path, *, timeout: float = REMOVE_SECONDS) -> bool:
    """Remove the cgroup once its processes are gone; False when it still had some at
    ``timeout`` (or was already gone: True)."""
    deadline = time.monotonic() + timeout
    while True:
        if not path.exists() or _rmdir(path):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _parents(root: Path) -> list[tuple[int, Path]]:
    """Where a cgroup may be made, best first: per version, our own cgroup, then the root."""
    found: list[tuple[int, Path]] = []
    for v2 in (root, root / "unified"):
        controllers = v2 / "cgroup.controllers"
        if controllers.exists() and "memory" in _read(controllers).split():
            # v2 gives a cgroup that has processes no children with controllers, so ours
            # hangs from the root, whose children get the memory controller if asked.
            subtree = v2 / "cgroup.subtree_control"
            if "memory" not in _read(subtree).split():
                with contextlib.suppress(OSError):
                    subtree.write_text("+memory\n")
            found.append((2, v2))
            break
    v1 = root / "memory"
    if (v1 / "memory.limit_in_bytes").exists():
        own = _own(v1, "memory")
        if own is not None and own != v1:
            found.append((1, own))
        found.append((1, v1))
    return found


def _own(mount: Path, controller: str) -> Path | None:
    """Our own cgroup's folder in the v1 hierarchy of ``controller`` mounted at ``mount``."""
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            folder = mount / parts[2].lstrip("/")
            return folder if folder.is_dir() else None
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
