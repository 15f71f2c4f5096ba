"""Which local process owns the client end of each PostgreSQL backend's connection.

``pg_stat_activity`` says where a backend's client connects from
(``client_addr``, ``client_port``); the kernel knows which socket has that
local endpoint (``/proc/<pid>/net/tcp*``, one table per network namespace) and
which processes hold that socket (``/proc/<pid>/fd/*`` -> ``socket:[inode]``).
Joining the two tells which gunicorn worker holds which backend.

Both halves are expensive on a real host, so the resolver does as little as it
can, and this module is only the part that decides what to do:

* A backend's client endpoint never changes while the backend lives, so an
  answer is cached under the backend's identity (pid + ``backend_start``) and
  only new backends are resolved; backends gone from the latest call are
  forgotten. What needs no lookup is answered by
  :func:`~profiler.targets.backend_clients.classify`.
* New backends are resolved together, in one pass over /proc
  (:class:`_OwnerScan`): the processes grouped by network namespace
  (:mod:`profiler.targets.net_namespaces`), the TCP client sockets found
  (:mod:`profiler.targets.tcp_clients`) or the Unix-socket peers
  (:mod:`profiler.targets.unix_sockets`), then their holders
  (:mod:`profiler.targets.socket_holders`).
* File descriptors are read only for processes in the namespaces where a
  socket was found; PostgreSQL's own backends (the pids the caller passes) are
  read last, only if a socket is still unaccounted for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from profiler.model import Owner
from profiler.targets.backend_clients import ClientSide, classify, client_address
from profiler.targets.net_namespaces import NetNamespaces
from profiler.targets.socket_holders import SocketHolders
from profiler.targets.sockets import TcpSocket
from profiler.targets.tcp_clients import TcpClientFinder
from profiler.targets.unix_sockets import UnixStats, find_unix_peers


@dataclass(frozen=True, slots=True)
class ScanStats:
    """What one /proc scan cost and touched: for benchmarks, and for tests that prove
    the resolver reads no more than it should.

    ``tables_read`` names each (network namespace, ``tcp``/``tcp6``) table read;
    ``diag_lookups`` counts exact sock_diag lookups in our own namespace.
    """

    seconds: float
    backends: int
    processes: int
    namespaces: int
    diag_lookups: int
    tables_read: tuple[tuple[str, str], ...]
    fd_dirs_read: int
    fd_links_read: int


class OwnershipResolver:
    """Maps backends to the local processes holding their client sockets, caching answers.

    ``server_port`` (the sampler's ``inet_server_port()``) makes the match
    exact: only sockets connected to that port count, and it enables the
    ``sock_diag`` fast path (``sock_diag=False`` forces the /proc tables).
    Unix-socket clients are looked up through the backend process when
    PostgreSQL runs here (:mod:`profiler.targets.unix_sockets`);
    ``unix_sockets=False`` only classifies them.
    ``proc_root`` lets a profiler in a container read the host's ``/proc``
    mounted elsewhere.
    """

    def __init__(
        self,
        server_port: int | None = None,
        proc_root: Path = Path("/proc"),
        *,
        sock_diag: bool = True,
        unix_sockets: bool = True,
    ) -> None:
        self.server_port = server_port
        self.proc_root = proc_root
        self.sock_diag = sock_diag
        self.unix_sockets = unix_sockets
        self.cache_hits = 0
        self.cache_misses = 0
        self.scans = 0
        self.last_scan_seconds = 0.0
        self.last_scan: ScanStats | None = None
        self._cache: dict[tuple[int, float | datetime | None], Owner] = {}

    def resolve(self, clients: Sequence[ClientSide]) -> dict[int, Owner]:
        """The owner of every backend in ``clients``, keyed by backend pid.

        Pass every row of ``pg_stat_activity`` the sampler saw: backends absent
        from a call are forgotten, and the backends' own pids are what a scan
        reads last. Cached backends cost a dictionary lookup; only new ones
        cause a scan, one for all of them.
        """
        cache = self._cache
        kept: dict[tuple[int, float | datetime | None], Owner] = {}
        owners: dict[int, Owner] = {}
        lookups: list[ClientSide] = []
        hits = 0
        for client in clients:
            key = (client.pid, client.backend_start)
            owner = cache.get(key)
            if owner is None:
                if client.client_port == -1 and self.unix_sockets:
                    lookups.append(client)
                    continue
                owner = classify(client)
                if owner is None:
                    lookups.append(client)
                    continue
            else:
                hits += 1
            kept[key] = owner
            owners[client.pid] = owner
        self.cache_hits += hits
        self.cache_misses += len(clients) - hits
        if lookups:
            found = self._scan(lookups, {client.pid for client in clients})
            for client in lookups:
                owner = found[client.pid]
                kept[(client.pid, client.backend_start)] = owner
                owners[client.pid] = owner
        self._cache = kept
        return owners

    def _scan(self, lookups: list[ClientSide], backend_pids: set[int]) -> dict[int, Owner]:
        started = time.perf_counter()
        scan = _OwnerScan(str(self.proc_root), self.server_port, backend_pids, self.sock_diag)
        unix = [client for client in lookups if client.client_port == -1]
        owners = scan.run([client for client in lookups if client.client_port != -1])
        if unix:
            owners.update(scan.run_unix(unix))
        seconds = time.perf_counter() - started
        self.scans += 1
        self.last_scan_seconds = seconds
        self.last_scan = scan.stats(seconds, backends=len(lookups))
        return owners


class _OwnerScan:
    """One pass over /proc for a batch of backends; thrown away afterwards.

    Its state (namespaces, holders) is only true for the instant of the scan:
    keeping it would mean trusting pids that may have been reused since.
    """

    def __init__(
        self, root: str, server_port: int | None, backend_pids: set[int], sock_diag: bool
    ) -> None:
        self.root = root
        self.sock_diag = sock_diag
        self.namespaces = NetNamespaces(root, backend_pids)
        self.tcp = TcpClientFinder(self.namespaces, server_port, sock_diag)
        self.holders = SocketHolders(root)
        self.unix = UnixStats()

    def stats(self, seconds: float, backends: int) -> ScanStats:
        """What this scan cost and touched, all lookups together."""
        return ScanStats(
            seconds=seconds,
            backends=backends,
            processes=self.namespaces.processes,
            namespaces=len(self.namespaces.by_namespace),
            diag_lookups=self.tcp.diag_lookups + self.unix.diag_lookups,
            tables_read=tuple(self.tcp.tables_read),
            fd_dirs_read=self.holders.fd_dirs_read + self.unix.fd_dirs_read,
            fd_links_read=self.holders.fd_links_read + self.unix.fd_links_read,
        )

    def run(self, lookups: list[ClientSide]) -> dict[int, Owner]:
        """Owners of ``lookups`` (TCP clients only), keyed by backend pid."""
        if not lookups:
            return {}
        clients = {client.pid: client for client in lookups}
        found, closing = self.tcp.find(clients)
        holders = self._find_holders({tcp.inode for _, tcp in found.values()}, found)
        owners: dict[int, Owner] = {}
        described: dict[tuple[int, ...], Owner] = {}
        for backend_pid, client in clients.items():
            if backend_pid in found:
                inode = found[backend_pid][1].inode
                pids = holders.get(inode)
                if not pids:
                    owners[backend_pid] = _no_readable_holder(f"client socket {inode}")
                    continue
                key = tuple(sorted(pids))
                if key not in described:
                    described[key] = self.holders.describe(key)
                owner = described[key]
                port = client.client_port
                if port is not None and port > 0:
                    owner = replace(owner, client_port=port)  # the socket it holds
                owners[backend_pid] = owner
            elif backend_pid in closing:
                owners[backend_pid] = Owner(
                    "unknown",
                    detail=f"the client socket is {closing[backend_pid].state}: "
                    "the connection is closing",
                )
            else:
                owners[backend_pid] = Owner(
                    "remote",
                    detail="no socket on this host has local endpoint "
                    f"{client_address(client)}:{client.client_port}",
                )
        return owners

    def run_unix(self, lookups: list[ClientSide]) -> dict[int, Owner]:
        """Owners of Unix-socket clients: the peer of each backend's socket, then its holders.

        The backend's network namespace is read first (where its clients
        usually are), every process of it, so that sharers are all named; a
        client elsewhere (a socket directory mounted into a container) after.
        """
        peers = find_unix_peers(self.root, lookups, sock_diag=self.sock_diag, stats=self.unix)
        links = {f"socket:[{p.peer}]": p.peer for p in peers.values() if p.peer}
        holders: dict[int, list[int]] = {}
        if links:
            # The backends hold the other ends: never owners, and hundreds of fds.
            scanned = {p.host_pid for p in peers.values() if p.host_pid is not None}
            namespaces = {p.namespace for p in peers.values() if p.peer}
            by_namespace = self.namespaces.by_namespace
            near = [pid for n in namespaces for pid in by_namespace.get(n, ())]
            self.holders.read_fds(near, links, holders, scanned)
            if len(holders) < len(links):
                rest = [pid for pids in by_namespace.values() for pid in pids]
                self.holders.read_fds(rest, links, holders, scanned, until_found=True)
        owners: dict[int, Owner] = {}
        for backend_pid, peer in peers.items():
            pids = holders.get(peer.peer) if peer.peer else None
            if pids:
                owners[backend_pid] = self.holders.describe(tuple(sorted(pids)))
            elif peer.peer:
                owners[backend_pid] = _no_readable_holder(f"the client's Unix socket {peer.peer}")
            else:
                owners[backend_pid] = Owner(
                    "unix-socket" if peer.kind == "unix-socket" else "unknown", detail=peer.reason
                )
        return owners

    def _find_holders(
        self, inodes: set[int], found: dict[int, tuple[str, TcpSocket]]
    ) -> dict[int, list[int]]:
        """inode -> every pid holding it, in one pass over the processes that can hold them.

        Every process of the namespaces the sockets were found in is read, not
        just until each socket has a holder: a socket is shared when a process
        forks after connecting (gunicorn ``--preload``), and every sharer must
        be named. Stopping early would need the process tree to find them,
        which costs as much as reading the few fds most processes have.
        """
        if not inodes:
            return {}
        links = {f"socket:[{inode}]": inode for inode in inodes}
        holders: dict[int, list[int]] = {}
        scanned: set[int] = set()
        by_namespace = self.namespaces.by_namespace
        namespaces = {namespace for namespace, _ in found.values()}
        pool = [pid for namespace in namespaces for pid in by_namespace.get(namespace, ())]
        self.holders.read_fds(pool, links, holders, scanned)
        if len(holders) < len(links):
            # A backend that is a client itself (dblink, postgres_fdw), then a
            # socket passed into another namespace: rare, so read last.
            self.holders.read_fds(
                self.namespaces.backend_pids, links, holders, scanned, until_found=True
            )
            rest = [
                pid
                for namespace, pids in by_namespace.items()
                if namespace not in namespaces
                for pid in pids
            ]
            self.holders.read_fds(rest, links, holders, scanned, until_found=True)
        return holders


def _no_readable_holder(what: str) -> Owner:
    """A socket was found, but none of its holders is a process we may read.

    One wording for TCP and Unix-socket clients: the cause (permissions) and the
    fix are the same for both.
    """
    return Owner(
        "unknown",
        detail=f"{what} found, but no process we may read holds it "
        "(run as root or as the worker's user)",
    )
