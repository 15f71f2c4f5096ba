"""Seeing through a connection pooler to the worker behind each PostgreSQL backend.

Behind PgBouncer every backend's client socket belongs to the pooler, so
``/proc`` alone names PgBouncer as the owner of every connection. PgBouncer
itself knows which of its clients each server connection serves:

* ``SHOW SERVERS``: one row per server connection (PgBouncer -> PostgreSQL),
  with the local end of its socket (``local_addr``/``local_port``, which is the
  backend's ``client_addr``/``client_port``), the backend's pid
  (``remote_pid``) and ``link``: the client it serves right now, if any;
* ``SHOW CLIENTS``: one row per client connection, with ``ptr`` (what a
  server's ``link`` names) and the client's own address and port.

The client's socket is then an ordinary TCP client of PgBouncer's listen port,
whose owner the :class:`~profiler.targets.ownership.OwnershipResolver` finds as
for any backend. In transaction pooling a server is linked to a client only
while a transaction is open, so links are read per snapshot; the client
sockets' owners are stable and cached by the resolver.

Nothing here does I/O but the resolver's ``/proc`` reads: the console rows come
from :mod:`profiler.pg.pgbouncer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from profiler.model import Owner
from profiler.targets.backend_clients import BackendClient, ClientSide, address_forms
from profiler.targets.ownership import OwnershipResolver

# What PgBouncer shows in addr for a Unix-socket peer.
_UNIX = "unix"


@dataclass(frozen=True, slots=True)
class PoolerConnection:
    """One row of PgBouncer's ``SHOW SERVERS`` or ``SHOW CLIENTS``, the columns we use.

    Read by name: the column set grows across PgBouncer versions; a column an
    old version lacks reads as its empty value.
    """

    user: str
    database: str
    state: str
    addr: str
    port: int
    local_addr: str
    local_port: int
    connect_time: str
    ptr: str
    link: str
    remote_pid: int = 0
    application_name: str = ""

    @property
    def over_unix_socket(self) -> bool:
        return _UNIX in (self.addr, self.local_addr)


@dataclass(frozen=True, slots=True)
class PoolerState:
    """What one read of the admin console showed: servers and clients at one instant."""

    name: str
    servers: tuple[PoolerConnection, ...]
    clients: tuple[PoolerConnection, ...]


class SeeThrough:
    """Replaces a pooler's ownership of backends by the workers it serves them to.

    Keep one per sampler: the resolver behind it caches the owners of the
    pooler's client sockets, which live as long as the workers' connections.
    """

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self.proc_root = proc_root
        self._resolvers: dict[int, OwnershipResolver] = {}
        self._ids: dict[tuple[str, int, str, str], int] = {}
        self._next_id = -1
        # The worker's owner seen through the pooler, built once per resolver answer
        # (that answer kept alongside, so a recycled id() cannot match).
        self._behind: dict[tuple[int, str, int | None, int], tuple[Owner, Owner]] = {}
        self._last_identities: list[tuple[str, int, str, str, int]] = []
        self._last_found: dict[tuple[str, int], Owner] = {}
        self.linked = 0
        self.unlinked = 0

    def apply(
        self,
        backends: Sequence[ClientSide],
        owners: Mapping[int, Owner],
        state: PoolerState,
        pooler_pid: int | None = None,
    ) -> dict[int, Owner]:
        """``owners`` with every backend that is one of the pooler's server connections
        owned by the process holding the client it serves (``via`` the pooler), or by
        the pooler with the reason when there is no such process.

        ``pooler_pid`` names the pooler in the owners it keeps, when known
        (else the pid of an owner already found to be the pooler is used).
        """
        by_socket: dict[tuple[str, int], PoolerConnection] = {}
        by_pid: dict[int, PoolerConnection] = {}
        for server in state.servers:
            if server.remote_pid:
                by_pid[server.remote_pid] = server
            if not server.over_unix_socket and server.local_addr:
                forms = address_forms(server.local_addr)
                if forms is not None:
                    by_socket[(forms[0], server.local_port)] = server
        clients = {client.ptr: client for client in state.clients if client.ptr}
        client_owners = self._client_owners(state.clients)
        result = dict(owners)
        self.linked = self.unlinked = 0
        for backend in backends:
            serving = self._server_of(backend, by_socket, by_pid)
            if serving is None:
                continue
            known = owners.get(backend.pid)
            pid = pooler_pid
            cmdline = None
            if known is not None and known.kind == "pooler":
                pid, cmdline = known.pid, known.cmdline
            result[backend.pid] = self._owner(
                state.name, serving, clients, client_owners, pid, cmdline
            )
        return result

    def _owner(
        self,
        name: str,
        server: PoolerConnection,
        clients: Mapping[str, PoolerConnection],
        client_owners: Mapping[tuple[str, int], Owner],
        pid: int | None,
        cmdline: str | None,
    ) -> Owner:
        def pooler(why: str) -> Owner:
            return Owner("pooler", pid, cmdline, f"{name}: {why}", (pid,) if pid else ())

        client = clients.get(server.link) if server.link else None
        if client is None:
            self.unlinked += 1
            if server.link:
                return pooler(f"linked to client {server.link}, gone from SHOW CLIENTS")
            return pooler("pooled, no client now")
        self.linked += 1
        if client.over_unix_socket:
            return pooler(
                f"serves a client on its Unix socket (port {client.port}): "
                "Unix-socket clients are not resolved to a process yet"
            )
        found = client_owners.get((client.addr, client.port))
        if found is None:
            return pooler(f"serves client {client.addr}:{client.port}: unreadable address")
        if found.kind == "process":
            key = (id(found), name, pid, client.port)
            cached = self._behind.get(key)
            if cached is None or cached[0] is not found:
                via = f"through {name}" + (f" {pid}" if pid else "")
                detail = f"{via}; {found.detail}" if found.detail else via
                # client_port: the worker's end of its socket to the pooler, which the
                # task sampler records for the connection a task holds.
                cached = (found, replace(found, detail=detail, via=name, client_port=client.port))
                self._behind[key] = cached
            return cached[1]
        return pooler(f"serves client {client.addr}:{client.port}: {found.describe()}")

    @staticmethod
    def _server_of(
        backend: ClientSide,
        by_socket: Mapping[tuple[str, int], PoolerConnection],
        by_pid: Mapping[int, PoolerConnection],
    ) -> PoolerConnection | None:
        """The pooler's server connection this backend is, if it is one.

        Over TCP the backend's client endpoint is the server connection's local
        end, which is exact. Over a Unix socket there is no endpoint: the
        backend pid PgBouncer reports (``remote_pid``) is all there is.
        """
        port = backend.client_port
        if port is not None and port >= 0 and backend.client_addr:
            forms = address_forms(backend.client_addr)
            return None if forms is None else by_socket.get((forms[0], port))
        if port == -1:
            return by_pid.get(backend.pid)
        return None

    def _client_owners(self, clients: Sequence[PoolerConnection]) -> dict[tuple[str, int], Owner]:
        """Owner of every TCP client's socket, by the client's (addr, port), cached.

        Each client gets a stable made-up negative id (its identity is its
        endpoint and connect time), so the resolver's cache keeps its answer as
        long as the client stays connected and a new client reusing the
        endpoint is looked up again. When the clients are the very ones of the
        last call (a gateway's pools keep their connections), the last answer
        is the answer: one list comparison instead of a lookup per client.
        """
        identities = [
            (client.addr, client.port, client.connect_time, client.ptr, client.local_port)
            for client in clients
        ]
        if identities == self._last_identities:
            return self._last_found
        found = self._resolve_clients(clients)
        self._last_identities, self._last_found = identities, found
        return found

    def _resolve_clients(self, clients: Sequence[PoolerConnection]) -> dict[tuple[str, int], Owner]:
        by_port: dict[int, list[tuple[tuple[str, int], BackendClient]]] = {}
        ids: dict[tuple[str, int, str, str], int] = {}
        for client in clients:
            if client.over_unix_socket or not client.addr or not client.port:
                continue
            identity = (client.addr, client.port, client.connect_time, client.ptr)
            number = self._ids.get(identity)
            if number is None:
                number = self._next_id
                self._next_id -= 1
            ids[identity] = number
            side = BackendClient(number, None, client.addr, client.port)
            by_port.setdefault(client.local_port, []).append(((client.addr, client.port), side))
        self._ids = ids
        if len(self._behind) > 4 * len(ids) + 64:
            self._behind.clear()
        found: dict[tuple[str, int], Owner] = {}
        for port, sides in by_port.items():
            resolver = self._resolvers.get(port)
            if resolver is None:
                resolver = OwnershipResolver(server_port=port, proc_root=self.proc_root)
                self._resolvers[port] = resolver
            owners = resolver.resolve([side for _, side in sides])
            for key, side in sides:
                found[key] = owners[side.pid]
        return found

    @property
    def resolvers(self) -> Mapping[int, OwnershipResolver]:
        """The client-socket resolvers by PgBouncer listen port (benchmarks read their stats)."""
        return self._resolvers
