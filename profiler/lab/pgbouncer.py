"""A real PgBouncer between the lab gateway and PostgreSQL: the incident's topology.

Debian's ``pgbouncer`` binary, a config generated into the lab's log folder,
listening on a free loopback port, trust authentication (with a userlist when
the upstream DSN carries a password, so PgBouncer can log in upstream), the
lab's role as ``admin_users``/``stats_users`` so the profiler can read its
admin console, and pools large enough for every worker's SQLAlchemy pool.
PgBouncer refuses to run as root: as root it is started with ``-u nobody``
(it reads its config before switching user, and logs to our file through
stderr).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from profiler.capture.processes import is_running, spawn_detached, stop_pid
from profiler.errors import ProfilerError, ToolMissingError, UsageError
from profiler.pg.dsn import build

if TYPE_CHECKING:
    from profiler.lab.lifecycle import LabOptions
    from profiler.lab.state import LabState

PoolMode = Literal["session", "transaction"]
POOL_MODES: tuple[PoolMode, ...] = ("session", "transaction")
VIAS = ("pgbouncer",)
BINARY = "pgbouncer"
DEBIAN_PATH = "/usr/sbin/pgbouncer"
INSTALL_HINT = "install it: apt-get install pgbouncer (Debian/Ubuntu)"
HOST = "127.0.0.1"
RUN_AS_ROOT = "nobody"
MAX_CLIENT_CONN = 2000
START_TIMEOUT = 15.0


class PoolerError(ProfilerError):
    """PgBouncer could not be started."""


@dataclass(frozen=True, slots=True)
class RunningPooler:
    """A PgBouncer we started: its process, where it listens, its files."""

    pid: int
    port: int
    pool_mode: PoolMode
    config: Path
    log: Path
    role: str

    @property
    def admin_dsn(self) -> str:
        """The admin console, as the lab's role (listed in admin_users)."""
        return build(host=HOST, port=self.port, user=self.role, dbname="pgbouncer")


def binary() -> str:
    """The pgbouncer executable; exit 5 with the install command when there is none."""
    found = shutil.which(BINARY) or (DEBIAN_PATH if os.access(DEBIAN_PATH, os.X_OK) else None)
    if found is None:
        raise ToolMissingError("pgbouncer is not installed", hint=INSTALL_HINT)
    return found


def through(dsn: str, port: int) -> str:
    """``dsn`` (a libpq URI) with its host and port replaced by PgBouncer's.

    >>> through("postgresql://app:pw@127.0.0.1:5432/lab", 6500)
    'postgresql://app:pw@127.0.0.1:6500/lab'
    """
    parts = _parts(dsn)
    return build(
        host=HOST, port=port, user=parts["user"], dbname=parts["dbname"], password=parts["password"]
    )


def config_text(
    upstream: str,
    port: int,
    *,
    pool_mode: PoolMode,
    pool_size: int,
    userlist: Path,
    auth_type: str = "trust",
    unix_socket_dir: Path | None = None,
) -> str:
    """The generated pgbouncer.ini: every database of ``upstream``'s server, through us.

    >>> print(config_text("postgresql://app@127.0.0.1:5432/lab", 6500, pool_mode="transaction",
    ...                   pool_size=12, userlist=Path("/x/userlist.txt")))  # doctest: +ELLIPSIS
    [databases]
    * = host=127.0.0.1 port=5432
    <BLANKLINE>
    [pgbouncer]
    listen_addr = 127.0.0.1
    listen_port = 6500
    unix_socket_dir =
    auth_type = trust
    auth_file = /x/userlist.txt
    admin_users = app
    stats_users = app
    pool_mode = transaction
    default_pool_size = 12
    ...
    """
    parts = _parts(upstream)
    return "\n".join(
        [
            "[databases]",
            f"* = host={parts['host']} port={parts['port']}",
            "",
            "[pgbouncer]",
            f"listen_addr = {HOST}",
            f"listen_port = {port}",
            f"unix_socket_dir = {unix_socket_dir or ''}",
            f"auth_type = {auth_type}",
            f"auth_file = {userlist}",
            f"admin_users = {parts['user']}",
            f"stats_users = {parts['user']}",
            f"pool_mode = {pool_mode}",
            f"default_pool_size = {pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_client_conn = {MAX_CLIENT_CONN}",
            "max_db_connections = 0",
            "ignore_startup_parameters = extra_float_digits,options",
            "server_login_retry = 1",
            "",
        ]
    )


def start(
    upstream: str,
    directory: Path,
    *,
    pool_mode: PoolMode = "session",
    pool_size: int = 20,
    port: int | None = None,
    auth_type: str = "trust",
    unix_socket_dir: Path | None = None,
) -> RunningPooler:
    """Start PgBouncer in front of ``upstream``'s server; wait until it accepts connections.

    Its files go to ``directory`` (``pgbouncer.ini``, ``userlist.txt``,
    ``pgbouncer.log``). The caller stops it with :func:`stop` by PID. With
    ``auth_type`` other than trust, clients log in with the password of
    ``upstream``, which the userlist holds. No Unix socket unless
    ``unix_socket_dir`` is given (PgBouncer's user must be able to write there).
    """
    executable = binary()
    parts = _parts(upstream)
    port = port or _free_port()
    directory.mkdir(parents=True, exist_ok=True)
    userlist = directory / "userlist.txt"
    userlist.write_text(f'"{parts["user"]}" "{parts["password"] or ""}"\n')
    userlist.chmod(0o600)
    config = directory / "pgbouncer.ini"
    config.write_text(
        config_text(
            upstream,
            port,
            pool_mode=pool_mode,
            pool_size=pool_size,
            userlist=userlist,
            auth_type=auth_type,
            unix_socket_dir=unix_socket_dir,
        )
    )
    log = directory / "pgbouncer.log"
    argv = [executable, *(["-u", RUN_AS_ROOT] if os.geteuid() == 0 else []), str(config)]
    pid = spawn_detached(argv, log, dict(os.environ))
    try:
        _wait_listening(pid, port, log)
    except BaseException:
        stop(pid)
        raise
    return RunningPooler(pid, port, pool_mode, config, log, parts["user"])


def stop(pid: int) -> bool:
    """Stop a PgBouncer we started, by PID (SIGTERM, then SIGKILL); True if it ran."""
    return stop_pid(pid)


def _wait_listening(pid: int, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            from profiler.lab.lifecycle import last_line

            raise PoolerError(
                f"pgbouncer exited while starting: {last_line(log)}", hint=f"see {log}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise PoolerError(
        f"pgbouncer did not listen on {HOST}:{port} within {START_TIMEOUT:g}s",
        hint=f"see {log}",
    )


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for us to reap it (an exit is reaped here)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return is_running(pid)
    return done == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _parts(dsn: str) -> dict[str, str]:
    """host, port, user, password, dbname of a libpq URI (the lab's DSNs are URIs)."""
    parts = urlsplit(dsn)
    return {
        "host": parts.hostname or HOST,
        "port": str(parts.port or 5432),
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        "dbname": unquote(parts.path.lstrip("/")) or "postgres",
    }


# -- the lab ------------------------------------------------------------------------------


def start_for_lab(
    state: LabState, options: LabOptions, upstream: str, step: Callable[[str], None]
) -> tuple[LabState, str]:
    """``lab up --via pgbouncer``: PgBouncer in the lab's log folder, saved in the state file
    as soon as it runs (``lab down`` stops it by PID); the DSN the gateway should use."""
    from dataclasses import replace

    from profiler.capture.processes import create_time
    from profiler.lab import state as lab_state
    from profiler.lab.state import OwnedProcess

    if options.via not in VIAS:
        raise UsageError(f"--via must be one of {', '.join(VIAS)}, not {options.via!r}")
    if options.pool_mode not in POOL_MODES:
        raise UsageError(
            f"--pool-mode must be one of {', '.join(POOL_MODES)}, not {options.pool_mode!r}"
        )
    mode: PoolMode = "transaction" if options.pool_mode == "transaction" else "session"
    capacity = options.workers * (options.pool_size + options.max_overflow)
    step(f"starting PgBouncer ({mode} pooling, pool {capacity}) between gateway and PostgreSQL")
    pooler = start(upstream, Path(state.log_dir) / "pgbouncer", pool_mode=mode, pool_size=capacity)
    state = replace(state, pooler=OwnedProcess(pooler.pid, create_time(pooler.pid)), pool_mode=mode)
    lab_state.save(state)
    return state, through(upstream, pooler.port)
