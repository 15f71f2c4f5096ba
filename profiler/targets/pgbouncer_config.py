"""Where a PgBouncer running on this host takes admin-console connections, from its config.

PgBouncer is started as ``pgbouncer [-d] [-R] [-u USER] CONFIG.ini``; the
config file names where it listens (``listen_addr``/``listen_port``, and
``unix_socket_dir`` for its Unix socket) and which roles may read its admin
console (``admin_users``, ``stats_users``). For a PgBouncer in a container the
file and the socket are reached through ``/proc/<pid>/root``, which shows the
process's own mount namespace; its TCP listen address may be in another network
namespace, so the Unix socket is preferred when there is one.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 6432
DEFAULT_SOCKET_DIR = "/tmp"  # noqa: S108 (PgBouncer's own default)
# Options of pgbouncer that take a value: the config file is the first other argument.
_OPTIONS_WITH_VALUE = ("-u", "--user")


@dataclass(frozen=True, slots=True)
class ConsoleAddress:
    """How to reach one PgBouncer's admin console, and who may use it."""

    pid: int
    config: Path  # as the process names it
    host: str  # an address, or a directory holding its Unix socket (seen from here)
    port: int
    admin_users: tuple[str, ...]
    stats_users: tuple[str, ...]
    auth_type: str

    def allows(self, role: str) -> bool:
        return role in self.admin_users or role in self.stats_users


class ConfigUnreadable(Exception):
    """The config file could not be found or read; the message says why."""


def config_path(pid: int, proc_root: Path = Path("/proc")) -> tuple[Path, Path]:
    """(the path the process names, the path to read it from here) for a PgBouncer's config."""
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError as exc:
        raise ConfigUnreadable(f"cannot read the command line of {pid}: {exc}") from None
    args = [arg.decode("utf-8", errors="replace") for arg in raw.rstrip(b"\0").split(b"\0")]
    named = _config_argument(args[1:])
    if named is None:
        raise ConfigUnreadable(f"process {pid} names no config file: {' '.join(args)}")
    path = Path(named)
    if not path.is_absolute():
        try:
            cwd = os.readlink(proc_root / str(pid) / "cwd")
        except OSError as exc:
            raise ConfigUnreadable(f"cannot read the directory of {pid}: {exc}") from None
        path = Path(cwd) / path
    return path, _inside(pid, path, proc_root)


def _config_argument(args: list[str]) -> str | None:
    """The first argument that is neither an option nor an option's value.

    >>> _config_argument(["-d", "-u", "postgres", "/etc/pgbouncer/pgbouncer.ini"])
    '/etc/pgbouncer/pgbouncer.ini'
    >>> _config_argument(["-R"]) is None
    True
    """
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _inside(pid: int, path: Path, proc_root: Path) -> Path:
    """A path of the process's mount namespace, as we can open it."""
    return proc_root / str(pid) / "root" / path.relative_to("/")


def read_console(pid: int, proc_root: Path = Path("/proc")) -> ConsoleAddress:
    """The admin console of PgBouncer ``pid``, from its config file; raises ConfigUnreadable."""
    named, readable = config_path(pid, proc_root)
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(readable, encoding="utf-8", errors="replace") as file:
            parser.read_file(file)
    except (OSError, configparser.Error) as exc:
        raise ConfigUnreadable(f"cannot read {named}: {exc}") from None
    if not parser.has_section("pgbouncer"):
        raise ConfigUnreadable(f"{named} has no [pgbouncer] section")
    section = parser["pgbouncer"]
    try:
        port = int(section.get("listen_port", str(DEFAULT_PORT)).strip() or DEFAULT_PORT)
    except ValueError:
        raise ConfigUnreadable(f"{named}: listen_port is not a number") from None
    socket_dir = section.get("unix_socket_dir", DEFAULT_SOCKET_DIR).strip()
    host = ""
    if socket_dir and not socket_dir.startswith("@"):  # "@..." is Linux's abstract namespace
        seen = _inside(pid, Path(socket_dir), proc_root) if socket_dir.startswith("/") else None
        if seen is not None and (seen / f".s.PGSQL.{port}").exists():
            host = str(seen)
    if not host:
        host = _tcp_host(section.get("listen_addr", "").strip())
    if not host:
        raise ConfigUnreadable(f"{named}: PgBouncer listens neither on TCP nor on a Unix socket")
    return ConsoleAddress(
        pid=pid,
        config=named,
        host=host,
        port=port,
        admin_users=_users(section.get("admin_users", "")),
        stats_users=_users(section.get("stats_users", "")),
        auth_type=section.get("auth_type", "md5").strip(),
    )


def _tcp_host(listen_addr: str) -> str:
    """An address to connect to, from ``listen_addr`` (a list; ``*`` means all).

    >>> _tcp_host("*")
    '127.0.0.1'
    >>> _tcp_host("10.0.0.5, 127.0.0.1")
    '127.0.0.1'
    >>> _tcp_host("::")
    '::1'
    >>> _tcp_host("")
    ''
    """
    addresses = [a.strip() for a in listen_addr.split(",") if a.strip()]
    if not addresses:
        return ""
    for address in addresses:
        if address in ("*", "0.0.0.0", "127.0.0.1", "localhost"):  # noqa: S104 (read, not bound)
            return "127.0.0.1"
        if address in ("::", "::1"):
            return "::1"
    return addresses[0]


def _users(value: str) -> tuple[str, ...]:
    """A user list: names separated by commas and/or spaces.

    >>> _users("postgres, app  monitor")
    ('postgres', 'app', 'monitor')
    """
    return tuple(name for name in value.replace(",", " ").split() if name)
