"""Finding each backend's TCP client socket on this host: sock_diag first, then the tables.

A backend's client socket is the one whose *local* endpoint is the backend's
``client_addr:client_port`` (and, with the server port known, whose remote
port is PostgreSQL's). Reading a TCP table walks the kernel's whole
connection hash table and formats every socket (milliseconds, even for one
wanted socket), so :class:`TcpClientFinder` reads as little as it can:

* In our own namespace, a client on this host usually connects from the very
  address it connects to, so with ``server_port`` known one ``sock_diag``
  lookup per backend (a hash probe, what ``ss`` uses) finds its socket
  without a table.
* Otherwise each namespace's tables are read once, only in namespaces that own
  the client's address, and only until every wanted endpoint has been seen.

Which processes hold the sockets found is :mod:`profiler.targets.socket_holders`'
question; the wire format is :mod:`profiler.targets.sockets`'.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import Generator, Iterator

from profiler.targets.backend_clients import ClientSide, address_forms, client_address
from profiler.targets.net_namespaces import PROC_RACES, NetNamespaces
from profiler.targets.sockets import (
    NETLINK_SOCK_DIAG,
    TcpSocket,
    diag_request,
    parse_diag_replies,
    scan_for_local_endpoints,
)

_READ_CHUNK = 1 << 16
# Replies to one batch must fit the netlink socket's default receive buffer.
_DIAG_BATCH = 64
_DIAG_TIMEOUT = 1.0


class TcpClientFinder:
    """Finds client sockets for one scan, counting what it read.

    ``diag_lookups`` counts exact sock_diag lookups in our own namespace;
    ``tables_read`` names each (network namespace, ``tcp``/``tcp6``) table read.
    """

    def __init__(self, namespaces: NetNamespaces, server_port: int | None, sock_diag: bool) -> None:
        self.namespaces = namespaces
        self.server_port = server_port
        self.sock_diag = sock_diag
        self.diag_lookups = 0
        self.tables_read: list[tuple[str, str]] = []

    def find(
        self, clients: dict[int, ClientSide]
    ) -> tuple[dict[int, tuple[str, TcpSocket]], dict[int, TcpSocket]]:
        """By backend pid: the live client socket and its namespace; closing sockets apart."""
        addresses = {pid: client_address(client) for pid, client in clients.items()}
        namespaces = self.namespaces
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

        own = namespaces.own_namespace
        if self.sock_diag and self.server_port is not None and own in namespaces.by_namespace:
            pending = [
                (pid, addresses[pid], clients[pid].client_port or 0)
                for pid in sorted(remaining)
                if namespaces.is_local(own, addresses[pid])
            ]
            for backend_pid, tcp in self._diag_lookups(pending):
                record(own, backend_pid, tcp)

        wanted = _wanted_endpoints({pid: clients[pid] for pid in remaining})
        for namespace in namespaces.order():
            for table in ("tcp", "tcp6"):
                if not remaining:
                    return found, closing
                table_wanted = {}
                for endpoint, pids in wanted[table].items():
                    left = [
                        pid
                        for pid in pids
                        if pid in remaining and namespaces.is_local(namespace, addresses[pid])
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
        root = self.namespaces.root
        for pid in self.namespaces.representatives(namespace):
            lines = _table_lines(f"{root}/{pid}/net/{table}")
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
            except PROC_RACES:
                continue
            return


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
