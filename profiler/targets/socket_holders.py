"""Which processes hold a socket, and what to call them: a worker, a pooler, a forked sharer.

A socket's holders show only from the holders' side: every open file of a
process is a link in ``/proc/<pid>/fd`` that reads ``socket:[inode]`` for a
socket. Finding them means a ``readlink`` for every open file of every
candidate process, so :meth:`SocketHolders.read_fds` reads each process once
per scan and counts what it read; which processes to read first is the
caller's (:mod:`profiler.targets.ownership`) policy.

Once found, the holders become an :class:`~profiler.model.Owner`
(:meth:`SocketHolders.describe`): the worker rather than the master that
forked it, its command line as ``ps`` shows it, and a connection pooler named
as one (:func:`pooler_name`), since a pooler's sockets stand for other
processes' connections.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from profiler.model import Owner, _shorten
from profiler.targets.net_namespaces import PROC_RACES

POOLERS = ("pgbouncer", "odyssey", "pgcat", "pgpool", "supavisor")
CMDLINE_LIMIT = 300

_POOLER = re.compile(rf"(?<![\w.\-])({'|'.join(POOLERS)})(?![\w./\-])")


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


class SocketHolders:
    """Reads the holders of sockets from ``/proc`` (``root``) for one scan, counting its reads.

    ``fd_dirs_read`` and ``fd_links_read`` say how many ``/proc/<pid>/fd``
    directories and links were read: what a scan costs, and what tests check
    to prove it reads no more than it should.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.fd_dirs_read = 0
        self.fd_links_read = 0

    def read_fds(
        self,
        pids: Iterable[int],
        links: dict[str, int],
        holders: dict[int, list[int]],
        scanned: set[int],
        *,
        until_found: bool = False,
    ) -> None:
        """Record which of ``pids`` hold the sockets in ``links``, each process read once.

        ``links`` maps ``socket:[inode]`` to the inode; ``holders`` (inode ->
        pids) and ``scanned`` (pids read) carry over between calls, so a
        caller can read the likely processes first and the rest after. With
        ``until_found``, stop as soon as every socket has a holder.
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
            except PROC_RACES:
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
            except PROC_RACES:
                continue  # denied for one fd is denied for all; or the process is gone
            finally:
                os.close(directory)
        self.fd_dirs_read += dirs
        self.fd_links_read += links_read

    def describe(self, pids: tuple[int, ...]) -> Owner:
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
        except PROC_RACES:
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rpartition(b")")[2].split(None, 3)
        return int(fields[1]) if len(fields) > 1 else None

    def _cmdline(self, pid: int) -> str:
        try:
            with open(f"{self.root}/{pid}/cmdline", "rb") as file:
                raw = file.read(CMDLINE_LIMIT * 4)
        except PROC_RACES:
            return ""
        text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", errors="replace")
        return _shorten(text, CMDLINE_LIMIT)

    def _read_text(self, name: str) -> str:
        try:
            with open(f"{self.root}/{name}", encoding="utf-8", errors="replace") as file:
                return file.read()
        except PROC_RACES:
            return ""
