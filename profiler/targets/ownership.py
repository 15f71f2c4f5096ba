"""Which local process owns the client end of each PostgreSQL backend's connection.

``pg_stat_activity`` says where a backend's client connects from
(``client_addr``, ``client_port``); the kernel knows which socket has that
local endpoint (``/proc/<pid>/net/tcp*``, one table per network namespace) and
which processes hold that socket (``/proc/<pid>/fd/*`` -> ``socket:[inode]``).
Joining the two tells which gunicorn worker holds which backend.

Both halves are expensive on a real host: each read of a TCP table walks the
kernel's whole connection hash table and formats every socket (milliseconds,
even for one wanted socket), and finding a socket's holders means a
``readlink`` for every open file of every candidate process. So the resolver
does as little as it can:

* A backend's client endpoint never changes while the backend lives, so an
  answer is cached under the backend's identity (pid + ``backend_start``) and
  only new backends are resolved; backends gone from the latest call are
  forgotten.
* New backends are resolved together, in one pass over /proc. In our own
  namespace, a client on this host usually connects from the very address it
  connects to, so with ``server_port`` known one ``sock_diag`` lookup per
  backend (a hash probe, what ``ss`` uses) finds its socket without a table.
* Otherwise each namespace's tables are read once, only in namespaces that own
  the client's address, and only until every wanted endpoint has been seen.
* File descriptors are read only for processes in the namespaces where a
  socket was found; PostgreSQL's own backends (the pids the caller passes) are
  read last, only if a socket is still unaccounted for.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import socket
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from profiler.model import Owner, _shorten
from profiler.targets.backend_clients import (
    ClientSide,
    address_forms,
    classify,
    client_address,
)
from profiler.targets.sockets import (
    NETLINK_SOCK_DIAG,
    TcpSocket,
    diag_request,
    parse_diag_replies,
    parse_fib_trie_local,
    parse_if_inet6,
    scan_for_local_endpoints,
)
from profiler.targets.unix_sockets import UnixStats, find_unix_peers

POOLERS = ("pgbouncer", "odyssey", "pgcat", "pgpool", "supavisor")
CMDLINE_LIMIT = 300

# A process can exit, or exec into something we may not read, between listing
# /proc and reading its files: these are the normal races, not failures.
_RACES = (PermissionError, FileNotFoundError, ProcessLookupError)
_POOLER = re.compile(rf"(?<![\w.\-])({'|'.join(POOLERS)})(?![\w./\-])")
_READ_CHUNK = 1 << 16
# Replies to one batch must fit the netlink socket's default receive buffer.
_DIAG_BATCH = 64
_DIAG_TIMEOUT = 1.0


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


def pooler_name(comm: str, cmdline: str) -> str | None:
    """The connection pooler a process is, from its executable's name.

    The name (``comm``) or the first word of the command line, whole words
    only: a pooler's config open in an editor, a worker whose DSN names a host
    ``pgbouncer``, or ``profiler lab up --via pgbouncer`` are not poolers. An
    Erlang VM (``beam.smp``) is named by its release (Supavisor), in its arguments.

    >>> pooler_name("pgbouncer", "/usr/sbin/pgbouncer /etc/pgbouncer/pgbouncer.ini")
    'pgbouncer'
    >>> pooler_name("pgpool", "pgpool: wait for connection request")
    'pgpool'
    >>> pooler_name("beam.smp", "/app/bin/beam.smp -- -root /app -sname supavisor@db1")
    'supavisor'
    >>> pooler_name("vim", "vim /etc/pgbouncer/pgbouncer.ini") is None
    True
    >>> pooler_name("python3", "python3 -m gunicorn app:app") is None
    True
    >>> pooler_name("python3", "python3 app.py --dsn postgresql://app@pgbouncer:6432/app") is None
    True
    """
    words = cmdline.split(maxsplit=1)
    first = words[0].rsplit("/", 1)[-1] if words else ""
    texts = [comm, first]
    if comm.startswith("beam") or first.startswith("beam"):
        texts.append(cmdline)
    for text in texts:
        match = _POOLER.search(text.lower())
        if match:
            return match.group(1)
    return None


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
        scan = _Scan(str(self.proc_root), self.server_port, backend_pids, self.sock_diag)
        unix = [client for client in lookups if client.client_port == -1]
        owners = scan.run([client for client in lookups if client.client_port != -1])
        if unix:
            owners.update(scan.run_unix(unix))
        seconds = time.perf_counter() - started
        self.scans += 1
        self.last_scan_seconds = seconds
        self.last_scan = ScanStats(
            seconds=seconds,
            backends=len(lookups),
            processes=scan.processes,
            namespaces=len(scan.by_namespace),
            diag_lookups=scan.diag_lookups,
            tables_read=tuple(scan.tables_read),
            fd_dirs_read=scan.fd_dirs_read,
            fd_links_read=scan.fd_links_read,
        )
        return owners


class _Scan:
    """One pass over /proc for a batch of backends; thrown away afterwards.

    Its state (namespaces, holders) is only true for the instant of the scan:
    keeping it would mean trusting pids that may have been reused since.
    """

    def __init__(
        self, root: str, server_port: int | None, backend_pids: set[int], sock_diag: bool
    ) -> None:
        self.root = root
        self.server_port = server_port
        self.sock_diag = sock_diag
        self.processes = 0
        self.diag_lookups = 0
        self.fd_dirs_read = 0
        self.fd_links_read = 0
        self.tables_read: list[tuple[str, str]] = []
        self.by_namespace: dict[str, list[int]] = {}
        self.backend_pids: list[int] = []
        self.server_namespace = ""
        try:
            self.own_namespace = os.readlink(f"{root}/self/ns/net")
        except OSError:
            self.own_namespace = ""
        self._addresses: dict[str, tuple[list[ipaddress.IPv4Network], set[str]] | None] = {}
        self._local: dict[tuple[str, str], bool] = {}
        self._list_processes(backend_pids)

    def run(self, lookups: list[ClientSide]) -> dict[int, Owner]:
        """Owners of ``lookups`` (TCP clients only), keyed by backend pid."""
        if not lookups:
            return {}
        clients = {client.pid: client for client in lookups}
        found, closing = self._find_sockets(clients)
        holders = self._find_holders({tcp.inode for _, tcp in found.values()}, found)
        owners: dict[int, Owner] = {}
        described: dict[tuple[int, ...], Owner] = {}
        for backend_pid, client in clients.items():
            if backend_pid in found:
                inode = found[backend_pid][1].inode
                pids = holders.get(inode)
                if not pids:
                    owners[backend_pid] = Owner(
                        "unknown",
                        detail=f"client socket {inode} found, but no process we may read "
                        "holds it (run as root or as the worker's user)",
                    )
                    continue
                key = tuple(sorted(pids))
                if key not in described:
                    described[key] = self._describe(key)
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
        stats = UnixStats()
        peers = find_unix_peers(self.root, lookups, sock_diag=self.sock_diag, stats=stats)
        self.diag_lookups += stats.diag_lookups
        self.fd_dirs_read += stats.fd_dirs_read
        self.fd_links_read += stats.fd_links_read
        links = {f"socket:[{p.peer}]": p.peer for p in peers.values() if p.peer}
        holders: dict[int, list[int]] = {}
        if links:
            # The backends hold the other ends: never owners, and hundreds of fds.
            scanned = {p.host_pid for p in peers.values() if p.host_pid is not None}
            namespaces = {p.namespace for p in peers.values() if p.peer}
            near = [pid for n in namespaces for pid in self.by_namespace.get(n, ())]
            self._read_fds(near, links, holders, scanned)
            if len(holders) < len(links):
                rest = [pid for pids in self.by_namespace.values() for pid in pids]
                self._read_fds(rest, links, holders, scanned, until_found=True)
        owners: dict[int, Owner] = {}
        for backend_pid, peer in peers.items():
            pids = holders.get(peer.peer) if peer.peer else None
            if pids:
                owners[backend_pid] = self._describe(tuple(sorted(pids)))
            elif peer.peer:
                owners[backend_pid] = Owner(
                    "unknown",
                    detail=f"the client's Unix socket {peer.peer} found, but no process we may "
                    "read holds it (run as root or as the worker's user)",
                )
            else:
                owners[backend_pid] = Owner(
                    "unix-socket" if peer.kind == "unix-socket" else "unknown", detail=peer.reason
                )
        return owners

    # -- processes and namespaces ---------------------------------------------------

    def _list_processes(self, backend_pids: set[int]) -> None:
        """Group processes by network namespace, leaving PostgreSQL's backends aside.

        Backends hold the server ends of the very connections we look up, and
        there can be hundreds of them; they are only read when nothing else
        holds a socket (a backend that is itself a client, as with dblink).
        They all share their postmaster's namespace, so one of them is enough
        to know it.
        """
        by_namespace = self.by_namespace
        for name in os.listdir(self.root):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid in backend_pids:
                self.backend_pids.append(pid)
            else:
                self._join_namespace(pid, by_namespace)
        self.processes = len(self.backend_pids) + sum(map(len, by_namespace.values()))
        if self.backend_pids:
            # Possibly a namespace only backends live in (the server's own container).
            server: dict[str, list[int]] = {}
            self._join_namespace(self.backend_pids[0], server)
            for namespace in server:
                self.server_namespace = namespace
                by_namespace.setdefault(namespace, [])

    def _join_namespace(self, pid: int, groups: dict[str, list[int]]) -> None:
        try:
            namespace = os.readlink(f"{self.root}/{pid}/ns/net")
        except _RACES:
            return
        group = groups.get(namespace)
        if group is None:
            groups[namespace] = [pid]
        else:
            group.append(pid)

    def _namespace_order(self) -> list[str]:
        """Our own namespace first: a profiler usually runs beside what it profiles."""
        own = self.own_namespace
        return sorted(self.by_namespace, key=lambda namespace: (namespace != own, namespace))

    def _representatives(self, namespace: str) -> Iterator[int]:
        """Processes whose ``/proc/<pid>/net`` shows ``namespace``, to try in turn."""
        yield from self.by_namespace.get(namespace, ())
        if namespace == self.server_namespace:
            yield self.backend_pids[0]

    def _is_local(self, namespace: str, address: str) -> bool:
        """Whether ``address`` belongs to ``namespace``; True when we cannot tell.

        A client socket's local address is always one of its own namespace's,
        so other namespaces' tables (milliseconds each) need not be read.
        """
        key = (namespace, address)
        local = self._local.get(key)
        if local is None:
            if namespace not in self._addresses:
                self._addresses[namespace] = self._read_addresses(namespace)
            known = self._addresses[namespace]
            if known is None:
                local = True
            else:
                parsed = ipaddress.ip_address(address)
                local = (
                    any(parsed in network for network in known[0])
                    if isinstance(parsed, ipaddress.IPv4Address)
                    else address in known[1]
                )
            self._local[key] = local
        return local

    def _read_addresses(
        self, namespace: str
    ) -> tuple[list[ipaddress.IPv4Network], set[str]] | None:
        for pid in self._representatives(namespace):
            try:
                with open(f"{self.root}/{pid}/net/fib_trie", encoding="ascii") as file:
                    ipv4 = parse_fib_trie_local(file.read())
                with open(f"{self.root}/{pid}/net/if_inet6", encoding="ascii") as file:
                    ipv6 = set(parse_if_inet6(file.read()))
            except _RACES:
                continue
            return ipv4, ipv6
        return None

    # -- sockets ----------------------------------------------------------------------

    def _find_sockets(
        self, clients: dict[int, ClientSide]
    ) -> tuple[dict[int, tuple[str, TcpSocket]], dict[int, TcpSocket]]:
        """By backend pid: the live client socket and its namespace; closing sockets apart."""
        addresses = {pid: client_address(client) for pid, client in clients.items()}
        found: dict[int, tuple[str, TcpSocket]] = {}
        closing: dict[int, TcpSocket] = {}
        remaining = set(clients)

        def record(namespace: str, backend_pid: int, tcp: TcpSocket) -> None:
            if tcp.inode:
                found[backend_pid] = (namespace, tcp)
                closing.pop(backend_pid, None)
                remaining.discard(backend_pid)
            else:
                closing.setdefault(backend_pid, tcp)

        own = self.own_namespace
        if self.sock_diag and self.server_port is not None and own in self.by_namespace:
            pending = [
                (pid, addresses[pid], clients[pid].client_port or 0)
                for pid in sorted(remaining)
                if self._is_local(own, addresses[pid])
            ]
            for backend_pid, tcp in self._diag_lookups(pending):
                record(own, backend_pid, tcp)

        wanted = _wanted_endpoints({pid: clients[pid] for pid in remaining})
        for namespace in self._namespace_order():
            for table in ("tcp", "tcp6"):
                if not remaining:
                    return found, closing
                table_wanted = {}
                for endpoint, pids in wanted[table].items():
                    left = [
                        pid
                        for pid in pids
                        if pid in remaining and self._is_local(namespace, addresses[pid])
                    ]
                    if left:
                        table_wanted[endpoint] = left
                if table_wanted:
                    for backend_pid, tcp in self._read_table(namespace, table, table_wanted):
                        record(namespace, backend_pid, tcp)
        return found, closing

    def _diag_lookups(self, pending: list[tuple[int, str, int]]) -> Iterator[tuple[int, TcpSocket]]:
        """Exact lookups in our namespace, guessing the server address is the client's.

        A client in the server's namespace connects from the address it
        connects to (loopback, or the host's own address), so this one guess
        finds most local clients; a wrong guess is simply not found, and the
        tables are read for those.
        """
        server_port = self.server_port
        assert server_port is not None
        try:
            with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
                sock.settimeout(_DIAG_TIMEOUT)
                for start in range(0, len(pending), _DIAG_BATCH):
                    batch = pending[start : start + _DIAG_BATCH]
                    sock.send(
                        b"".join(
                            diag_request(start + i, (address, port), (address, server_port))
                            for i, (_, address, port) in enumerate(batch)
                        )
                    )
                    self.diag_lookups += len(batch)
                    answered = 0
                    while answered < len(batch):
                        for seq, tcp in parse_diag_replies(sock.recv(1 << 16)):
                            answered += 1
                            if tcp is None or not 0 <= seq - start < len(batch):
                                continue
                            backend_pid, address, port = batch[seq - start]
                            if (
                                tcp.local_addr == address
                                and tcp.local_port == port
                                and tcp.remote_port == server_port
                                and tcp.state != "LISTEN"
                            ):
                                yield backend_pid, tcp
        except OSError:
            return  # no sock_diag here (seccomp, old kernel): the tables still work

    def _read_table(
        self, namespace: str, table: str, wanted: dict[str, list[int]]
    ) -> Iterator[tuple[int, TcpSocket]]:
        """Matching sockets of one table, read only until every endpoint was seen live.

        Stopping early matters twice: the kernel walks its hash table as we
        read, and reading to the end costs one more full walk.
        """
        server_port = self.server_port
        for pid in self._representatives(namespace):
            lines = _table_lines(f"{self.root}/{pid}/net/{table}")
            try:
                with contextlib.closing(lines):
                    first = next(lines)  # opens the file: fails here if the process is gone
                    self.tables_read.append((namespace, table))
                    matches = scan_for_local_endpoints(itertools.chain((first,), lines), wanted)
                    for endpoint, tcp in matches:
                        if tcp.state == "LISTEN" or (
                            server_port is not None and tcp.remote_port != server_port
                        ):
                            continue
                        for backend_pid in wanted.get(endpoint, ()):
                            yield backend_pid, tcp
                        if tcp.inode:
                            wanted.pop(endpoint, None)
                            if not wanted:
                                return
            except StopIteration:
                return
            except _RACES:
                continue
            return

    # -- holders ----------------------------------------------------------------------

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
        namespaces = {namespace for namespace, _ in found.values()}
        pool = [pid for namespace in namespaces for pid in self.by_namespace.get(namespace, ())]
        self._read_fds(pool, links, holders, scanned)
        if len(holders) < len(links):
            # A backend that is a client itself (dblink, postgres_fdw), then a
            # socket passed into another namespace: rare, so read last.
            self._read_fds(self.backend_pids, links, holders, scanned, until_found=True)
            rest = [
                pid
                for namespace, pids in self.by_namespace.items()
                if namespace not in namespaces
                for pid in pids
            ]
            self._read_fds(rest, links, holders, scanned, until_found=True)
        return holders

    def _read_fds(
        self,
        pids: Iterable[int],
        links: dict[str, int],
        holders: dict[int, list[int]],
        scanned: set[int],
        *,
        until_found: bool = False,
    ) -> None:
        """Record which of ``pids`` hold the sockets in ``links``, each process read once.

        With ``until_found``, stop as soon as every socket has a holder.
        """
        root = self.root
        readlink = os.readlink
        dirs = links_read = 0
        for pid in pids:
            if until_found and len(holders) >= len(links):
                break
            if pid in scanned:
                continue
            scanned.add(pid)
            try:
                directory = os.open(f"{root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
            except _RACES:
                continue
            try:
                names = os.listdir(directory)
                dirs += 1
                for name in names:
                    links_read += 1
                    try:
                        link = readlink(name, dir_fd=directory)
                    except FileNotFoundError:
                        continue  # closed since listed
                    inode = links.get(link)
                    if inode is not None:
                        pids_holding = holders.setdefault(inode, [])
                        if pid not in pids_holding:
                            pids_holding.append(pid)
            except _RACES:
                continue  # denied for one fd is denied for all; or the process is gone
            finally:
                os.close(directory)
        self.fd_dirs_read += dirs
        self.fd_links_read += links_read

    # -- describing a holder ----------------------------------------------------------

    def _describe(self, pids: tuple[int, ...]) -> Owner:
        """The owner record for a socket held by ``pids`` (sorted)."""
        worker = pids[0] if len(pids) == 1 else self._worker(pids)
        comm = self._read_text(f"{worker}/comm").strip()
        # Kernel threads and zombies have no command line; ps shows their name in brackets.
        cmdline = self._cmdline(worker) or (f"[{comm}]" if comm else None)
        shared = (
            f"shared by {len(pids)} processes (fork after connect): " + ", ".join(map(str, pids))
            if len(pids) > 1
            else ""
        )
        pooler = pooler_name(comm, cmdline or "")
        if pooler is not None:
            return Owner("pooler", worker, cmdline, pooler, pids)
        return Owner("process", worker, cmdline, shared, pids)

    def _worker(self, pids: tuple[int, ...]) -> int:
        """The holder that is no other holder's parent: the worker, not the master."""
        parents = {self._parent(pid) for pid in pids}
        workers = [pid for pid in pids if pid not in parents]
        return workers[0] if workers else pids[0]

    def _parent(self, pid: int) -> int | None:
        try:
            with open(f"{self.root}/{pid}/stat", "rb") as file:
                stat = file.read(512)
        except _RACES:
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rpartition(b")")[2].split(None, 3)
        return int(fields[1]) if len(fields) > 1 else None

    def _cmdline(self, pid: int) -> str:
        try:
            with open(f"{self.root}/{pid}/cmdline", "rb") as file:
                raw = file.read(CMDLINE_LIMIT * 4)
        except _RACES:
            return ""
        text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", errors="replace")
        return _shorten(text, CMDLINE_LIMIT)

    def _read_text(self, name: str) -> str:
        try:
            with open(f"{self.root}/{name}", encoding="utf-8", errors="replace") as file:
                return file.read()
        except _RACES:
            return ""


def _wanted_endpoints(clients: dict[int, ClientSide]) -> dict[str, dict[str, list[int]]]:
    """For each table, endpoint as the table spells it -> backend pids whose client it is."""
    wanted: dict[str, dict[str, list[int]]] = {"tcp": {}, "tcp6": {}}
    for backend_pid, client in clients.items():
        forms = address_forms(client.client_addr or "")
        assert forms is not None, "classify() let an unreadable address through"
        port = f":{client.client_port or 0:04X}"
        for table, spelled in (("tcp", forms[1]), ("tcp6", forms[2])):
            if spelled is not None:
                wanted[table].setdefault(spelled + port, []).append(backend_pid)
    return wanted


def _table_lines(path: str) -> Generator[str, None, None]:
    """Lines of a /proc table, read in large chunks and never past where the caller stops."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        tail = ""
        while True:
            chunk = os.read(descriptor, _READ_CHUNK)
            if not chunk:
                break
            lines = (tail + chunk.decode("ascii")).split("\n")
            tail = lines.pop()
            yield from lines
        if tail:
            yield tail
    finally:
        os.close(descriptor)
