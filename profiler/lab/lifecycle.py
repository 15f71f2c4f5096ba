"""Starting, inspecting and stopping the lab: PostgreSQL, downstream, gateway.

Every process is started in its own session (so the lab outlives ``lab up`` and
a Ctrl-C in that shell), recorded in the state file as soon as it exists (so
``lab down`` can clean up after a crash half-way through ``up``), and stopped
by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from profiler import units
from profiler.capture.processes import create_time, spawn_detached, stop_pid
from profiler.errors import ProfilerError, UsageError
from profiler.lab import downstream, memory_cgroup, servers
from profiler.lab import state as lab_state
from profiler.lab.servers import Server
from profiler.lab.settings import GatewaySettings, Mode
from profiler.lab.state import LabState, OwnedProcess
from profiler.pg import dsn as dsns
from profiler.pg import embedded
from profiler.pg.connect import connection

HOST = "127.0.0.1"
LAB_DATABASE = "lab"


class LabError(ProfilerError):
    """The lab cannot do what was asked in its current state."""


@dataclass(frozen=True, slots=True)
class LabOptions:
    mode: Mode = "held"
    workers: int = 2
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    downstream_latency: float = 1.0
    port: int = 8000
    dsn: str | None = None  # libpq form; None starts an embedded server
    via: str | None = None  # "pgbouncer": a real PgBouncer between gateway and PostgreSQL
    pool_mode: str = "session"  # with via: PgBouncer's pool_mode (session or transaction)
    server: Server = "gunicorn"
    unix_socket: bool = False  # the gateway connects through PostgreSQL's Unix socket
    scenario: str = ""  # profiler.lab.scenarios: one cause switched on (mode from it)
    memory_limit: int | None = None  # bytes, on the workers' cgroup (profiler.lab.memory_cgroup)


@dataclass(frozen=True, slots=True)
class LabStatus:
    running: bool
    mode: str | None
    dsn: str | None
    url: str | None
    master_pid: int | None
    worker_pids: list[int]
    downstream_pid: int | None
    postgres_pid: int | None
    pooler_pid: int | None = None  # PgBouncer's, with lab up --via pgbouncer
    pool_mode: str | None = None
    server: str | None = None


Step = Callable[[str], None]


def up(options: LabOptions, *, step: Step = lambda _: None) -> LabState:
    """Start the lab; on any failure, stop what was started and re-raise."""
    _refuse_if_running()
    _require_free_port(options.port)
    log_dir = Path(tempfile.mkdtemp(prefix="profiler-lab-"))
    state = LabState(
        mode=options.mode,
        dsn="",
        url=f"http://{HOST}:{options.port}",
        downstream_url="",
        workers=options.workers,
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        pool_timeout=options.pool_timeout,
        downstream_latency=options.downstream_latency,
        log_dir=str(log_dir),
        server=options.server,
        unix_socket=options.unix_socket,
    )
    try:
        if options.memory_limit is not None:  # first: a host without cgroups fails at once
            state = _limit_memory(state, options, step)
        state, libpq_dsn = _start_postgres(state, options.dsn, step)
        if options.unix_socket:
            libpq_dsn = _through_socket(libpq_dsn, step)
            state = replace(state, dsn=dsns.redact(libpq_dsn))
            lab_state.save(state)
        step("seeding the lab schema")
        from profiler.lab.seed import create_and_seed  # SQLAlchemy: only `up` pays for it

        create_and_seed(dsns.to_sqlalchemy(libpq_dsn))
        state = _start_downstream(state, options.downstream_latency, step)
        gateway_dsn = libpq_dsn
        if options.via is not None:
            from profiler.lab import pgbouncer

            state, gateway_dsn = pgbouncer.start_for_lab(state, options, libpq_dsn, step)
        state = _start_gateway(state, options, gateway_dsn, step)
    except BaseException:
        # The state file, not ``state``: a process is saved there as soon as it is spawned,
        # before the wait for it to answer, which is where Ctrl-C usually lands.
        _stop_everything(lab_state.load() or state)
        raise
    return state


def down(*, step: Step = lambda _: None) -> list[str]:
    """Stop everything the state file names; returns what was stopped."""
    state = lab_state.load()
    if state is None:
        raise LabError("no lab is running", hint="start one with: profiler lab up")
    return _stop_everything(state, step=step)


def status() -> LabStatus:
    state = lab_state.load()
    if state is None:
        return LabStatus(False, None, None, None, None, [], None, None, None)

    def pid(proc: OwnedProcess | None) -> int | None:
        return proc.pid if proc is not None and proc.running else None

    master = pid(state.master)
    return LabStatus(
        running=master is not None,
        mode=state.mode,
        dsn=state.dsn,
        url=state.url,
        master_pid=master,
        worker_pids=worker_pids(master) if master else [],
        downstream_pid=pid(state.downstream),
        postgres_pid=pid(state.postgres),
        pooler_pid=pid(state.pooler),
        pool_mode=state.pool_mode,
        server=state.server,
    )


def worker_pids(master_pid: int) -> list[int]:
    """The gateway master's workers (for every server, without multiprocessing's helpers)."""
    return servers.worker_pids(master_pid)


def _refuse_if_running() -> None:
    state = lab_state.load()
    if state is None:
        return
    alive = [(name, proc.pid) for name, proc in state.processes() if proc.running]
    if alive:
        pids = ", ".join(f"{name} PID {pid}" for name, pid in alive)
        raise LabError(
            f"a lab is already running ({pids}; {state.url})",
            hint="stop it first with: profiler lab down",
        )
    _stop_everything(state)  # a crashed lab: remove its leftovers and start afresh


def _require_free_port(port: int) -> None:
    """Free as the gateway will see it: it binds with SO_REUSEADDR, as every server does, so
    connections of a lab just stopped (TIME_WAIT for a minute) do not hold the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise UsageError(
                f"port {port} on {HOST} is in use",
                hint="choose another with --port, or stop what listens there",
            ) from None


def _start_postgres(state: LabState, dsn: str | None, step: Step) -> tuple[LabState, str]:
    if dsn is not None:
        step(f"using PostgreSQL at {dsns.redact(dsn)}")
        with connection(dsn):  # fail now, with exit 4, not inside a worker later
            pass
        state = replace(state, dsn=dsns.redact(dsn))
        lab_state.save(state)
        return state, dsn
    step("starting an embedded PostgreSQL")
    server = embedded.start()
    state = replace(
        state,
        postgres=OwnedProcess(server.pid, create_time(server.pid)),
        pgdata=str(server.pgdata),
    )
    lab_state.save(state)
    with connection(server.dsn) as conn:
        conn.execute(f'CREATE DATABASE "{LAB_DATABASE}"')  # constant identifier
    libpq_dsn = dsns.build(
        host=embedded.HOST, port=server.port, user=embedded.SUPERUSER, dbname=LAB_DATABASE
    )
    state = replace(state, dsn=libpq_dsn)
    lab_state.save(state)
    return state, libpq_dsn


def _through_socket(libpq_dsn: str, step: Step) -> str:
    from profiler.pg.unix_socket import socket_dsn

    through = socket_dsn(libpq_dsn)
    step(f"the gateway connects through the Unix socket: {dsns.redact(through)}")
    return through


def _spawn(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
) -> OwnedProcess:
    pid = spawn_detached(argv, log_dir / f"{name}.log", {**os.environ, **(env or {})})
    return OwnedProcess(pid, create_time(pid))


def _start_downstream(state: LabState, latency: float, step: Step) -> LabState:
    port = embedded.free_port(HOST)
    url = f"http://{HOST}:{port}"
    step(f"starting the downstream service ({latency:g}s latency)")
    proc = _spawn(
        "downstream",
        downstream.command(HOST, port, latency),
        Path(state.log_dir),
    )
    state = replace(state, downstream=proc, downstream_url=url)
    lab_state.save(state)
    _wait_healthy("downstream", url, proc, Path(state.log_dir) / "downstream.log")
    return state


def _start_gateway(state: LabState, options: LabOptions, libpq_dsn: str, step: Step) -> LabState:
    settings = GatewaySettings(
        dsn=dsns.to_sqlalchemy(libpq_dsn),
        mode=options.mode,
        downstream_url=state.downstream_url,
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        pool_timeout=options.pool_timeout,
        prepared_statements=options.via is None,
        scenario=options.scenario,
    )
    step(
        f"starting the gateway: {options.server}, {options.workers} workers, mode {options.mode}, "
        f"pool {options.pool_size}+{options.max_overflow} per worker"
    )
    log_dir = Path(state.log_dir)
    env = settings.to_env()
    if state.memory_cgroup is not None:
        env[memory_cgroup.ENV] = state.memory_cgroup
    argv = servers.command(options.server, workers=options.workers, host=HOST, port=options.port)
    proc = _spawn("gateway", argv, log_dir, env=env)
    state = replace(state, master=proc)
    lab_state.save(state)
    _wait_healthy("gateway", state.url, proc, log_dir / "gateway.log")
    deadline = time.monotonic() + 30
    while len(worker_pids(proc.pid)) < options.workers:
        if time.monotonic() > deadline:
            raise LabError(
                f"gateway started {len(worker_pids(proc.pid))} of {options.workers} workers",
                hint=f"see {log_dir / 'gateway.log'}",
            )
        time.sleep(0.1)
    workers = [OwnedProcess(pid, create_time(pid)) for pid in worker_pids(proc.pid)]
    state = replace(state, gateway_workers=workers)
    lab_state.save(state)
    return state


def _limit_memory(state: LabState, options: LabOptions, step: Step) -> LabState:
    """The workers' memory cgroup, made and recorded before any worker can join it."""
    assert options.memory_limit is not None
    made = memory_cgroup.create(f"profiler-lab-{options.port}", options.memory_limit)
    size = units.size(options.memory_limit)
    step(f"workers' memory limit: {size} (cgroup v{made.version} {made.path})")
    state = replace(state, memory_cgroup=str(made.path), memory_limit=options.memory_limit)
    lab_state.save(state)
    return state


def _wait_healthy(name: str, url: str, proc: OwnedProcess, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise LabError(f"the {name} exited while starting: {last_line(log)}", hint=f"see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:  # noqa: S310 - our loopback URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise LabError(
        f"the {name} did not answer {url}/health within {timeout:.0f}s", hint=f"see {log}"
    )


def last_line(log: Path) -> str:
    """The last non-blank line of a child's log: what it said as it died."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"


def _recorded_workers(state: LabState) -> list[int]:
    """The workers ``up`` recorded that still run (same PID and start time: not a reuse)."""
    return [w.pid for w in state.gateway_workers if w.running]


def _stop_everything(state: LabState, *, step: Step = lambda _: None) -> list[str]:
    stopped: list[str] = []
    if state.master is not None and state.master.running:
        workers = sorted({*worker_pids(state.master.pid), *_recorded_workers(state)})
        step(
            f"stopping the gateway ({state.server} master PID {state.master.pid}, "
            f"workers {workers})"
        )
        stop_pid(state.master.pid)
        for pid in workers:  # a worker orphaned by a killed master
            stop_pid(pid)
        stopped.append(f"gateway (PID {state.master.pid})")
    else:
        for pid in _recorded_workers(state):  # the master died; its workers may live on
            step(f"stopping an orphaned gateway worker (PID {pid})")
            stop_pid(pid)
            stopped.append(f"gateway worker (PID {pid})")
    if state.downstream is not None and state.downstream.running:
        step(f"stopping the downstream service (PID {state.downstream.pid})")
        stop_pid(state.downstream.pid)
        stopped.append(f"downstream (PID {state.downstream.pid})")
    if state.pooler is not None and state.pooler.running:
        step(f"stopping PgBouncer (PID {state.pooler.pid})")
        stop_pid(state.pooler.pid)
        stopped.append(f"pgbouncer (PID {state.pooler.pid})")
    if state.pgdata is not None:
        ours = state.postgres if state.postgres is not None and state.postgres.running else None
        if ours is not None:
            step(f"stopping PostgreSQL (PID {ours.pid})")
            stopped.append(f"postgres (PID {ours.pid})")
        embedded.stop(Path(state.pgdata), pid=ours.pid if ours else None)
    if state.memory_cgroup is not None:
        step(f"removing the workers' memory cgroup {state.memory_cgroup}")
        memory_cgroup.remove(Path(state.memory_cgroup))
    shutil.rmtree(state.log_dir, ignore_errors=True)
    lab_state.clear()
    return stopped
