"""The client end of a backend's Unix-socket connection, when PostgreSQL runs on this host.

``pg_stat_activity`` says nothing about a Unix-socket client (``client_port``
is -1, ``client_addr`` NULL), so the way in is the backend process itself:

1. the backend pid, as this ``/proc`` numbers it: the same pid when
   PostgreSQL shares our PID namespace, else the postgres process whose
   innermost ``NSpid`` is that pid and whose start time is the backend's;
2. its sockets, from ``/proc/PID/fd``;
3. which of them is a connected Unix stream socket accepted on a PostgreSQL
   socket file, and its peer: ``NETLINK_SOCK_DIAG`` with ``UNIX_DIAG_PEER``,
   asked in the backend's network namespace, then in ours (Unix sockets are
   listed per namespace, and an accepted socket is in its client's). The
   peer's holders are then found like a TCP client's.

Where sock_diag is refused, ``/proc/PID/net/unix`` still shows which socket is
the client's and on which socket file, but not its peer: the owner then says
so instead of guessing (see :mod:`profiler.targets.unix_diag`).

When the backend pid is no local postgres process, PostgreSQL runs elsewhere
and its Unix-socket clients are that host's processes: nothing to look up here.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from profiler.targets.namespaces import parse_ns_pid
from profiler.targets.sockets import NETLINK_SOCK_DIAG
from profiler.targets.unix_diag import (
    UnixSocket,
    parse_proc_net_unix,
    parse_unix_replies,
    unix_request,
)

NOT_LOCAL = "PostgreSQL is not on this host: a Unix-socket client cannot be looked up"
POSTGRES_SOCKET = ".s.PGSQL."
# A backend starts within milliseconds of its process; the boot time we derive
# process start times from has a one-second resolution.
START_TOLERANCE = 5.0
_CLONE_NEWNET = 0x40000000
_DIAG_BATCH = 64
_DIAG_TIMEOUT = 1.0
_RACES = (PermissionError, FileNotFoundError, ProcessLookupError)


class UnixClient(Protocol):
    """What is needed of a ``pg_stat_activity`` row (``ClientSide`` qualifies)."""

    @property
    def pid(self) -> int: ...
    @property
    def backend_start(self) -> float | datetime | None: ...


@dataclass(frozen=True, slots=True)
class UnixPeer:
    """What was found for one backend: its client socket's peer inode, or why none.

    ``peer`` is 0 when no peer can be named; ``reason`` then says why and
    ``kind`` is the owner kind to report (``unix-socket`` or ``unknown``).
    ``host_pid`` is the backend as this ``/proc`` numbers it; ``namespace`` the
    network namespace its client socket was found in, where the client most
    likely is (before the lookup: the backend's own).
    """

    backend_pid: int
    host_pid: int | None = None
    namespace: str = ""
    socket: UnixSocket | None = None
    peer: int = 0
    reason: str = ""
    kind: str = "unknown"


@dataclass
class UnixStats:
    """What a lookup cost, for :class:`~profiler.targets.ownership.ScanStats`."""

    diag_lookups: int = 0
    proc_net_unix_read: int = 0
    fd_dirs_read: int = 0
    fd_links_read: int = 0


def find_unix_peers(
    root: str, clients: Sequence[UnixClient], *, sock_diag: bool = True, stats: UnixStats
) -> dict[int, UnixPeer]:
    """For each backend in ``clients`` (Unix-socket clients), keyed by backend pid."""
    hosts = _HostPids(root)
    found: dict[int, UnixPeer] = {}
    sockets: dict[int, list[int]] = {}
    by_namespace: dict[str, list[UnixPeer]] = {}
    missing = []
    for client, host in hosts.find_all(clients):
        if host is None:
            missing.append(client.pid)
            continue
        inodes = _socket_inodes(root, host, stats)
        if inodes is None:
            found[client.pid] = UnixPeer(
                client.pid,
                host,
                reason=f"cannot read the open files of backend process {host} "
                "(run as root or as PostgreSQL's user)",
            )
            continue
        try:
            namespace = os.readlink(f"{root}/{host}/ns/net")
        except _RACES:
            namespace = ""
        sockets[client.pid] = inodes
        by_namespace.setdefault(namespace, []).append(UnixPeer(client.pid, host, namespace))
    # With other backends of this server found here, a missing one has just exited.
    gone = "the backend has exited since it was sampled"
    for pid in missing:
        found[pid] = UnixPeer(pid, reason=gone if sockets else NOT_LOCAL, kind="unix-socket")
    for namespace, peers in by_namespace.items():
        for peer in _in_namespace(root, namespace, peers, sockets, sock_diag, stats):
            found[peer.backend_pid] = peer
    return found


def _in_namespace(
    root: str,
    namespace: str,
    peers: list[UnixPeer],
    sockets: dict[int, list[int]],
    sock_diag: bool,
    stats: UnixStats,
) -> list[UnixPeer]:
    """Each backend's client socket and peer, asked of the kernel of each namespace it may be in.

    An accepted Unix socket belongs to the *client's* network namespace (the
    kernel makes it for the connecting socket), which is the backend's own
    only when the client shares it: a client outside PostgreSQL's container
    has both ends in its namespace. So the backends' namespace is asked
    first, then ours for what is still missing.
    """
    wanted = {inode for peer in peers for inode in sockets[peer.backend_pid]}
    own = _own_namespace(root)
    places = [(namespace, str(peers[0].host_pid))]
    if own != namespace:
        places.append((own, "self"))
    known: dict[int, UnixSocket] = {}
    where: dict[int, str] = {}
    refused = "sock_diag is disabled"
    for place, pid in places:
        missing = sorted(wanted - known.keys())
        if not missing:
            break
        got: dict[int, UnixSocket] | None = None
        if sock_diag:
            try:
                got = _diag(root, pid, place != own, missing, stats)
            except OSError as exc:
                refused = f"sock_diag is not available ({exc.strerror or exc})"
        if got is None:
            got = _proc_net_unix(root, pid, set(missing), stats)
        known.update(got)
        where.update(dict.fromkeys(got, place))
    answered = []
    for peer in peers:
        mine = [known[inode] for inode in sockets[peer.backend_pid] if inode in known]
        client = _client_socket(mine)
        if client is None:
            answered.append(
                replace(
                    peer,
                    reason=f"backend process {peer.host_pid} holds no connected Unix "
                    "stream socket: the connection is closing",
                )
            )
        elif client.peer is None:
            answered.append(
                replace(
                    peer,
                    socket=client,
                    kind="unix-socket",
                    reason=f"{refused}: /proc/net/unix shows the backend's socket {client.inode}"
                    f" on {client.path or 'an unnamed socket'} but not its peer, so its client"
                    " cannot be named",
                )
            )
        elif client.peer == 0:
            answered.append(
                replace(
                    peer,
                    socket=client,
                    reason="the client closed its end of the Unix socket: the connection is "
                    "closing",
                )
            )
        else:
            answered.append(
                replace(peer, socket=client, peer=client.peer, namespace=where[client.inode])
            )
    return answered


def _client_socket(sockets: list[UnixSocket]) -> UnixSocket | None:
    """The accepted end of the client's connection among a backend's sockets.

    It inherits the listening socket's path (``.s.PGSQL.<port>``); a socket
    the backend opened itself as a client (dblink) has no path.
    """
    connected = [s for s in sockets if s.connected_stream]
    for candidate in connected:
        if POSTGRES_SOCKET in candidate.path:
            return candidate
    named = [s for s in connected if s.path]
    return named[0] if named else None


# -- the backend's process ------------------------------------------------------------


class _HostPids:
    """Backend pids (PostgreSQL's PID namespace) -> pids of this ``/proc``, checked.

    A pid alone is not enough: in another PID namespace the same number is some
    other process here. A backend is a process named ``postgres`` that started
    when ``pg_stat_activity`` says it did.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._boot: float | None = None
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._nested: dict[int, list[int]] | None = None

    def find_all(self, clients: Sequence[UnixClient]) -> list[tuple[UnixClient, int | None]]:
        """Each client with its backend's pid here, or None when no such backend runs here.

        All backends of a server share its PID namespace: when some are ours as
        they are, the others have exited, and nested namespaces (a read of
        every process) need not be searched.
        """
        direct = [
            (c, c.pid if self._postgres_started(c.pid, _epoch(c.backend_start)) else None)
            for c in clients
        ]
        if any(host is not None for _, host in direct):
            return direct
        return [(client, self._inside(client)) for client, _ in direct]

    def _inside(self, client: UnixClient) -> int | None:
        started = _epoch(client.backend_start)
        for host in self._nested_postgres().get(client.pid, ()):
            if self._postgres_started(host, started):
                return host
        return None

    def _postgres_started(self, pid: int, started: float | None) -> bool:
        try:
            with open(f"{self.root}/{pid}/stat", "rb") as file:
                stat = file.read(1024)
        except _RACES:
            return False
        head, _, tail = stat.rpartition(b")")
        if head.partition(b"(")[2] != b"postgres":
            return False
        if started is None:
            return True
        fields = tail.split()
        # starttime is field 22; ``tail`` starts at field 3 (state).
        since_boot = int(fields[19]) / self._ticks if len(fields) > 19 else None
        if since_boot is None:
            return True
        return abs(self._boot_time() + since_boot - started) <= START_TOLERANCE

    def _boot_time(self) -> float:
        if self._boot is None:
            self._boot = 0.0
            try:
                with open(f"{self.root}/stat", encoding="ascii") as file:
                    for line in file:
                        if line.startswith("btime "):
                            self._boot = float(line.split()[1])
                            break
            except OSError:
                pass
        return self._boot

    def _nested_postgres(self) -> dict[int, list[int]]:
        """Innermost pid -> our pids, for postgres processes in nested PID namespaces.

        Read once per scan, and only when some backend pid was not ours.
        """
        if self._nested is None:
            self._nested = {}
            for name in os.listdir(self.root):
                if not name.isdigit():
                    continue
                try:
                    with open(f"{self.root}/{name}/comm", "rb") as file:
                        if file.read().strip() != b"postgres":
                            continue
                    with open(f"{self.root}/{name}/status", encoding="utf-8") as file:
                        inner = parse_ns_pid(file.read())
                except _RACES:
                    continue
                if inner is not None and inner != int(name):
                    self._nested.setdefault(inner, []).append(int(name))
        return self._nested


def _epoch(moment: float | datetime | None) -> float | None:
    if isinstance(moment, datetime):
        return moment.timestamp()
    return moment


def _socket_inodes(root: str, pid: int, stats: UnixStats) -> list[int] | None:
    """Inodes of the sockets ``pid`` holds; None when its fds cannot be read."""
    try:
        directory = os.open(f"{root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except _RACES:
        return None
    inodes = []
    try:
        names = os.listdir(directory)
        stats.fd_dirs_read += 1
        for name in names:
            stats.fd_links_read += 1
            try:
                link = os.readlink(name, dir_fd=directory)
            except FileNotFoundError:
                continue
            if link.startswith("socket:["):
                inodes.append(int(link[8:-1]))
    except _RACES:
        return None
    finally:
        os.close(directory)
    return inodes


# -- asking the kernel ----------------------------------------------------------------


def _diag(
    root: str, pid: str, foreign: bool, inodes: list[int], stats: UnixStats
) -> dict[int, UnixSocket]:
    """Exact sock_diag lookups of ``inodes`` in ``pid``'s namespace; OSError when refused."""
    with _netlink_socket(root, pid, foreign) as sock:
        sock.settimeout(_DIAG_TIMEOUT)
        found: dict[int, UnixSocket] = {}
        for start in range(0, len(inodes), _DIAG_BATCH):
            batch = inodes[start : start + _DIAG_BATCH]
            sock.send(b"".join(unix_request(start + i, inode) for i, inode in enumerate(batch)))
            stats.diag_lookups += len(batch)
            answered = 0
            while answered < len(batch):
                for _, unix in parse_unix_replies(sock.recv(1 << 16)):
                    answered += 1
                    if unix is not None:
                        found[unix.inode] = unix
        return found


def _own_namespace(root: str) -> str:
    try:
        return os.readlink(f"{root}/self/ns/net")
    except OSError:
        return ""


def _netlink_socket(root: str, pid: str, foreign: bool) -> socket.socket:
    """A sock_diag socket in our network namespace, or in ``pid``'s.

    A socket stays in the namespace it was made in, so a short-lived thread
    enters the other namespace (``setns`` changes only the calling thread),
    makes the socket and ends. Entering needs CAP_SYS_ADMIN: OSError otherwise.
    """
    if not foreign:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def enter_and_make() -> None:
        try:
            descriptor = os.open(f"{root}/{pid}/ns/net", os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(descriptor, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, os.strerror(errno))
            finally:
                os.close(descriptor)
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=enter_and_make, name="profiler-setns", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    if not made:
        raise OSError("could not make a sock_diag socket in PostgreSQL's network namespace")
    return made[0]


def _proc_net_unix(
    root: str, pid: str, wanted: set[int], stats: UnixStats
) -> dict[int, UnixSocket]:
    """The fallback: the namespace's ``/proc/PID/net/unix`` (sockets, but no peers)."""
    try:
        with open(f"{root}/{pid}/net/unix", encoding="utf-8") as file:
            stats.proc_net_unix_read += 1
            return {s.inode: s for s in parse_proc_net_unix(file, wanted)}
    except _RACES:
        return {}
