"""Finding a gateway's workers: masters and the processes they fork.

gunicorn, uvicorn (``--workers``), hypercorn and granian all run a master that
forks or spawns Python workers; the workers serve requests and are what we
attach to. ``--pid MASTER`` means its workers; a worker's own PID means itself.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from profiler.errors import AttachError, UsageError
from profiler.model import Worker
from profiler.targets.interpreter import interpreter_of, probe_interpreter
from profiler.targets.namespaces import ns_pid

SERVERS = ("gunicorn", "uvicorn", "hypercorn", "granian")
_SERVER_WORD = re.compile(r"(?:^|[\s/:-])(" + "|".join(SERVERS) + r")(?:$|[\s:.])")
# Helpers a master spawns that serve nothing: multiprocessing's resource tracker.
_HELPER = re.compile(r"multiprocessing\.(?:resource_tracker|forkserver)")
_CONTAINER = re.compile(
    r"(?:docker[-/]|libpod-|cri-containerd-|crio-|containerd/)([0-9a-f]{12,64})|kubepods"
)
PG_DEFAULT_PORT = 5432
CPU_WINDOW = 0.2


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """What the user asked for: ``--pid`` (repeatable), ``--match``, a container
    (``--container`` with ``--engine``), pods (``--pod`` or ``--selector``, with
    ``--namespace`` and ``--context``), or nothing (auto).

    ``--match`` combines with a container or pods: their processes whose
    command line matches.
    """

    pids: tuple[int, ...] = ()
    match: str | None = None
    container: str | None = None
    engine: str = "docker"
    pod: str | None = None
    selector: str | None = None
    namespace: str | None = None
    context: str | None = None

    @property
    def auto(self) -> bool:
        return not self.pids and self.match is None and not self.in_containers

    @property
    def in_containers(self) -> bool:
        return bool(self.container or self.pod or self.selector)


Warn = Callable[[str], None]


def _ignore(_: str) -> None:
    return None


def find_workers(spec: TargetSpec, warn: Warn = _ignore) -> list[Worker]:
    """Every process the spec names, masters included (role tells them apart), described.

    Describing costs: a 0.2 s CPU window, a scan for PostgreSQL's ports, each
    process's sockets, and one interpreter run per distinct interpreter.
    Capture commands that only need PIDs use :func:`attach_pids`.
    """
    processes, labels = _select_any(spec, warn)
    pg_ports = _postgres_ports()
    for proc in processes:  # cpu_percent needs two readings over a window
        _quietly(proc.cpu_percent)
    time.sleep(CPU_WINDOW)
    found = [
        _describe(proc, role, server, pg_ports, labels.get(proc.pid))
        for proc, role, server in _roles(processes)
    ]
    return [w for w in found if w is not None]


def attach_pids(spec: TargetSpec, warn: Warn = _ignore) -> list[int]:
    """What capture commands attach to: workers and matched processes, never masters.

    Resolved the same way as :func:`find_workers`, without describing anything.
    """
    processes, _ = _select_any(spec, warn)
    return [proc.pid for proc, role, _ in _roles(processes) if role != "master"]


def container_labels(spec: TargetSpec, warn: Warn = _ignore) -> dict[int, str]:
    """Host PID -> ``pod/NAME`` / ``docker/NAME`` for the processes a container spec names."""
    return _select_any(spec, warn)[1]


def _select_any(spec: TargetSpec, warn: Warn) -> tuple[list[psutil.Process], dict[int, str]]:
    if spec.in_containers:
        return _select_containers(spec, warn)
    return _select(spec), {}


def _select_containers(spec: TargetSpec, warn: Warn) -> tuple[list[psutil.Process], dict[int, str]]:
    """The Python processes of the named container or pods, by host PID, each with its label."""
    from profiler.containers import ContainerTarget, docker, kubernetes

    targets: list[ContainerTarget] = []
    if spec.container:
        targets.append(docker.resolve(spec.container, spec.engine))
    if spec.pod or spec.selector:
        found, skipped = kubernetes.resolve(
            spec.pod, selector=spec.selector, namespace=spec.namespace, context=spec.context
        )
        targets.extend(found)
        for line in skipped:
            warn(line)
    pattern = _pattern(spec.match) if spec.match is not None else None
    labels: dict[int, str] = {}
    chosen: list[psutil.Process] = []
    for target in targets:
        for pid in target.host_pids:
            try:
                proc = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
            if not _is_python(proc) or is_helper(proc):
                continue
            if pattern is not None and not pattern.search(_cmdline(proc)):
                continue
            chosen.append(proc)
            labels[pid] = target.label
    if not chosen:
        names = ", ".join(t.label for t in targets) or "the container"
        raise AttachError(
            f"no Python processes in {names}",
            hint="check what it runs: docker top NAME / kubectl exec POD -- ps aux",
        )
    return _unique(chosen), labels


def _pattern(match: str) -> re.Pattern[str]:
    try:
        return re.compile(match)
    except re.error as exc:
        raise UsageError(f"--match is not a valid regular expression: {exc}") from None


def _quietly(read: Callable[[], object]) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        read()


def _select(spec: TargetSpec) -> list[psutil.Process]:
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.parents())}
    if spec.pids:
        chosen: list[psutil.Process] = []
        for pid in spec.pids:
            proc = _process(pid)
            if not _is_python(proc):
                raise AttachError(
                    f"PID {pid} is not a Python process ({_name(proc)})",
                    hint="pass the PID of a gateway master or worker (see: profiler workers)",
                )
            chosen.append(proc)
            chosen.extend(c for c in _children(proc) if _is_python(c) and not is_helper(c))
        return _unique(chosen)
    if spec.match is not None:
        pattern = _pattern(spec.match)
        return [
            p
            for p in psutil.process_iter()
            if p.pid not in mine and _is_python(p) and pattern.search(_cmdline(p))
        ]
    masters = [
        p
        for p in psutil.process_iter()
        if p.pid not in mine and _server(p) is not None and not _server_parent(p, mine)
    ]
    chosen = []
    for master in masters:
        chosen.append(master)
        chosen.extend(c for c in _children(master) if _is_python(c) and not is_helper(c))
    return _unique(chosen)


def _roles(processes: list[psutil.Process]) -> Iterable[tuple[psutil.Process, str, str | None]]:
    pids = {p.pid for p in processes}
    for proc in processes:
        server = _server(proc) or _server_of_parent(proc)
        has_workers = any(c.pid in pids for c in _children(proc))
        parent_listed = _ppid(proc) in pids
        if has_workers:
            role = "master"
        elif parent_listed or server is not None:
            role = "worker"
        else:
            role = "process"
        yield proc, role, server


def _describe(
    proc: psutil.Process,
    role: str,
    server: str | None,
    pg_ports: set[int],
    label: str | None = None,
) -> Worker | None:
    try:
        with proc.oneshot():
            cmdline = proc.cmdline()
            interpreter = interpreter_of(proc)
            facts = probe_interpreter(interpreter, proc.pid)
            return Worker(
                pid=proc.pid,
                ppid=proc.ppid(),
                role=role,
                server=server,
                cmdline=" ".join(cmdline),
                executable=interpreter,
                python_version=facts.python_version if facts else _version_from_exe(proc),
                rss_bytes=proc.memory_info().rss,
                cpu_percent=round(proc.cpu_percent(), 1),
                threads=proc.num_threads(),
                started_at=proc.create_time(),
                pg_connections=_pg_connections(proc, pg_ports),
                container=label or _container(proc.pid),
                ns_pid=_ns_pid(proc.pid),
                memray_importable=facts.memray_importable if facts else None,
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None  # exited while we looked: not a target any more


def _process(pid: int) -> psutil.Process:
    # Not capture.processes.readable_process: targets sit below capture, and opening a
    # process reads nothing protected, so "gone" is the only failure here.
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise AttachError(
            f"no process with PID {pid}", hint="list candidates with: profiler workers"
        ) from None


def _is_python(proc: psutil.Process) -> bool:
    """From ``/proc/PID/exe``; when ptrace rules hide it, from the process's name.

    Without the name fallback, a worker we may not read would be called "not
    Python" and the user would never learn the real problem: permission.
    """
    try:
        exe = Path(proc.exe()).name
    except psutil.AccessDenied:
        return _name(proc).startswith(("python", "pypy")) or bool(_server(proc))
    except (psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
        return False
    if exe.startswith(("python", "pypy")):
        return True
    try:  # an embedding binary (granian's Rust master, uwsgi) links libpython
        return any("libpython" in m.path for m in proc.memory_maps(grouped=True))
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
        return False


def is_helper(proc: psutil.Process) -> bool:
    """A process a server's master starts that serves nothing (multiprocessing's helpers)."""
    return bool(_HELPER.search(_cmdline(proc)))


def _server(proc: psutil.Process) -> str | None:
    match = _SERVER_WORD.search(_cmdline(proc))
    return match.group(1) if match else None


def _server_parent(proc: psutil.Process, mine: set[int]) -> bool:
    """True for a server's worker: its parent runs the same kind of server.

    Never when the parent is this command or one of its ancestors: a shell or test
    runner whose command line merely mentions a server does not make the servers it
    started into workers.
    """
    try:
        parent = proc.parent()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    return parent is not None and parent.pid not in mine and _server(parent) is not None


def _server_of_parent(proc: psutil.Process) -> str | None:
    try:
        parent = proc.parent()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    return _server(parent) if parent is not None else None


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return list(proc.children())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _ppid(proc: psutil.Process) -> int:
    try:
        return int(proc.ppid())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def _name(proc: psutil.Process) -> str:
    try:
        return str(proc.name())
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return "unknown"


def _unique(processes: list[psutil.Process]) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for proc in processes:
        seen.setdefault(proc.pid, proc)
    return sorted(seen.values(), key=lambda p: p.pid)


def _version_from_exe(proc: psutil.Process) -> str | None:
    try:
        exe = str(proc.exe())
    except psutil.AccessDenied:
        return None
    match = re.search(r"python(\d+\.\d+)", exe)
    return match.group(1) if match else None


def _postgres_ports() -> set[int]:
    """Ports PostgreSQL listens on here (the lab's are not 5432), plus the default."""
    ports = {PG_DEFAULT_PORT}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in ("postgres", "postmaster"):
            continue
        try:
            if proc.ppid() not in (0, 1) and _name(proc.parent()) == "postgres":
                continue  # a backend; only the postmaster listens
            ports.update(
                c.laddr.port
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            )
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return ports


def _pg_connections(proc: psutil.Process, ports: set[int]) -> int:
    try:
        return sum(
            1
            for c in proc.net_connections(kind="tcp")
            if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
        )
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return 0


def _ns_pid(pid: int) -> int:
    return ns_pid(pid)


def _container(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    match = _CONTAINER.search(text)
    if match is None:
        return None
    return match.group(1)[:12] if match.group(1) else "kubernetes"
