"""This host's processes grouped by network namespace, and which addresses each namespace owns.

A TCP table (``/proc/<pid>/net/tcp*``) shows one network namespace's sockets,
read through any process of it; a socket's holders are among that namespace's
processes. So the ownership scan (:mod:`profiler.targets.ownership`) first
groups every process of ``/proc`` by ``/proc/<pid>/ns/net``, once per scan,
and then asks of each namespace: which process shows its tables
(:meth:`NetNamespaces.representatives`), whether it can hold a given client
address at all (:meth:`NetNamespaces.is_local`, from ``fib_trie`` and
``if_inet6``), and in which order to try them (ours first).

This is not :mod:`profiler.targets.namespaces`, which is about entering one
target's namespaces (``nsenter``, its files); here nothing is entered, every
namespace is only read through ``/proc``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

from profiler.targets.sockets import parse_fib_trie_local, parse_if_inet6

# A process can exit, or exec into something we may not read, between listing
# /proc and reading its files: these are the normal races, not failures.
PROC_RACES = (PermissionError, FileNotFoundError, ProcessLookupError)


class NetNamespaces:
    """The processes of ``/proc`` (``root``) by network namespace, at one instant.

    Only true for the instant it was read: keeping it would mean trusting pids
    that may have been reused since, so each scan lists anew.

    PostgreSQL's own backends (``backend_pids``, those present here) are kept
    aside in :attr:`backend_pids`: they hold the server ends of the very
    connections looked up, and there can be hundreds of them.
    """

    def __init__(self, root: str, backend_pids: set[int]) -> None:
        self.root = root
        self.processes = 0
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

    def _list_processes(self, backend_pids: set[int]) -> None:
        """Group processes by network namespace, leaving PostgreSQL's backends aside.

        Backends are only read when nothing else holds a socket (a backend
        that is itself a client, as with dblink). They all share their
        postmaster's namespace, so one of them is enough to know it.
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
        except PROC_RACES:
            return
        group = groups.get(namespace)
        if group is None:
            groups[namespace] = [pid]
        else:
            group.append(pid)

    def order(self) -> list[str]:
        """Our own namespace first: a profiler usually runs beside what it profiles."""
        own = self.own_namespace
        return sorted(self.by_namespace, key=lambda namespace: (namespace != own, namespace))

    def representatives(self, namespace: str) -> Iterator[int]:
        """Processes whose ``/proc/<pid>/net`` shows ``namespace``, to try in turn."""
        yield from self.by_namespace.get(namespace, ())
        if namespace == self.server_namespace:
            yield self.backend_pids[0]

    def is_local(self, namespace: str, address: str) -> bool:
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
        for pid in self.representatives(namespace):
            try:
                with open(f"{self.root}/{pid}/net/fib_trie", encoding="ascii") as file:
                    ipv4 = parse_fib_trie_local(file.read())
                with open(f"{self.root}/{pid}/net/if_inet6", encoding="ascii") as file:
                    ipv6 = set(parse_if_inet6(file.read()))
            except PROC_RACES:
                continue
            return ipv4, ipv6
        return None
