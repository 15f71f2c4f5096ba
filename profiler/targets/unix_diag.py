"""Unix-domain sockets as the kernel describes them: sock_diag messages and ``/proc/net/unix``.

A PostgreSQL backend serving a Unix-socket client holds the accepted end of a
connected ``SOCK_STREAM`` pair; the client holds the other end. Which socket
is the other end (its *peer*) only ``NETLINK_SOCK_DIAG`` tells, with
``UNIX_DIAG_PEER``: what ``ss -xp`` and ``lsof +E`` use. :func:`unix_request`
and :func:`parse_unix_replies` are that protocol's bytes.

``/proc/net/unix`` is the fallback where sock_diag is not allowed (seccomp,
a kernel without ``CONFIG_UNIX_DIAG``). It lists each socket's inode, type,
state and path, but **no peer**: it can tell which of a backend's sockets is
its connected client socket and on which PostgreSQL socket file it was
accepted, not who is at the other end. Inode numbers are no substitute: the
accepted end gets its inode at ``accept()``, long after the client's socket
was made, from a per-CPU counter.

Nothing here does I/O, so every case is a doctest.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from profiler.targets.sockets import SOCK_DIAG_BY_FAMILY

# include/uapi/linux/unix_diag.h
UDIAG_SHOW_NAME = 0x01
UDIAG_SHOW_PEER = 0x04
UNIX_DIAG_NAME = 0
UNIX_DIAG_PEER = 2
# Unix sockets reuse TCP's state numbers: 1 connected, 10 listening, 7 unconnected.
STATE_NAMES = {1: "CONNECTED", 7: "UNCONNECTED", 10: "LISTEN", 2: "CONNECTING"}
# /proc/net/unix prints socket_state: SS_UNCONNECTED 1, SS_CONNECTING 2, SS_CONNECTED 3, ...
_PROC_STATES = {"01": "UNCONNECTED", "02": "CONNECTING", "03": "CONNECTED", "04": "DISCONNECTING"}
TYPE_NAMES: dict[int, str] = {
    int(socket.SOCK_STREAM): "STREAM",
    int(socket.SOCK_DGRAM): "DGRAM",
    int(socket.SOCK_SEQPACKET): "SEQPACKET",
}

_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NO_COOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
# unix_diag_req: family, protocol, pad, states, inode, show, cookie[2]
_UNIX_REQUEST = struct.Struct("=BBHIIIII")
# unix_diag_msg: family, type, state, pad, inode, cookie[2]; attributes follow
_UNIX_MESSAGE = struct.Struct("=BBBBIII")
_RTATTR = struct.Struct("=HH")  # length, type


@dataclass(frozen=True, slots=True)
class UnixSocket:
    """One Unix socket. ``peer`` is the inode of the other end (0: none, or it is closed;
    None: not known, as from ``/proc/net/unix``); ``path`` is the bound name, which an
    accepted socket inherits from its listening socket (``.../.s.PGSQL.5432``)."""

    inode: int
    type: str
    state: str
    path: str
    peer: int | None

    @property
    def connected_stream(self) -> bool:
        return self.type == "STREAM" and self.state == "CONNECTED"


def unix_request(seq: int, inode: int) -> bytes:
    """A sock_diag request for the one Unix socket with this inode, with its name and peer.

    >>> request = unix_request(7, 48213)
    >>> len(request), request[16] == socket.AF_UNIX
    (40, True)
    >>> struct.unpack_from("=II", request, 24)  # inode, what to show (name | peer)
    (48213, 5)
    """
    body = _UNIX_REQUEST.pack(
        socket.AF_UNIX,
        0,
        0,
        _ALL_STATES,
        inode,
        UDIAG_SHOW_NAME | UDIAG_SHOW_PEER,
        _NO_COOKIE,
        _NO_COOKIE,
    )
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, seq, 0)
    return header + body


def parse_unix_replies(data: bytes) -> Iterator[tuple[int, UnixSocket | None]]:
    """(sequence number, socket) for each message of a netlink read; None: no such socket.

    >>> name = b"/run/.s.PGSQL.5432"
    >>> attrs = _rtattr(UNIX_DIAG_NAME, name) + _rtattr(UNIX_DIAG_PEER, struct.pack("=I", 48214))
    >>> found = _UNIX_MESSAGE.pack(socket.AF_UNIX, socket.SOCK_STREAM, 1, 0, 48213, 0, 0) + attrs
    >>> missing = struct.pack("=i", -2) + bytes(16)  # an error: ENOENT, then our request
    >>> data = (_NLMSGHDR.pack(16 + len(found), SOCK_DIAG_BY_FAMILY, 0, 7, 0) + found
    ...         + _NLMSGHDR.pack(16 + len(missing), _NLMSG_ERROR, 0, 8, 0) + missing)
    >>> for seq, unix in parse_unix_replies(data):
    ...     print(seq, unix)  # doctest: +NORMALIZE_WHITESPACE
    7 UnixSocket(inode=48213, type='STREAM', state='CONNECTED', path='/run/.s.PGSQL.5432',
                 peer=48214)
    8 None
    """
    offset = 0
    size = len(data)
    while offset + _NLMSGHDR.size <= size:
        length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > size:
            break
        body = offset + _NLMSGHDR.size
        if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _UNIX_MESSAGE.size:
            family, kind_of, state, _, inode, _, _ = _UNIX_MESSAGE.unpack_from(data, body)
            path, peer = _attributes(data, body + _UNIX_MESSAGE.size, offset + length)
            if family == socket.AF_UNIX:
                yield (
                    seq,
                    UnixSocket(
                        inode,
                        TYPE_NAMES.get(kind_of, str(kind_of)),
                        STATE_NAMES.get(state, str(state)),
                        path,
                        peer,
                    ),
                )
        elif kind == _NLMSG_ERROR:
            yield seq, None
        offset += (length + 3) & ~3


def _attributes(data: bytes, start: int, end: int) -> tuple[str, int]:
    """(path, peer inode) from a message's attributes; a missing peer reads 0."""
    path = ""
    peer = 0
    offset = start
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        value = data[offset + _RTATTR.size : offset + length]
        if kind == UNIX_DIAG_NAME:
            # Abstract names start with a NUL; ss prints it as "@".
            path = (
                "@" + value[1:].decode(errors="replace")
                if value[:1] == b"\0"
                else (value.rstrip(b"\0").decode(errors="replace"))
            )
        elif kind == UNIX_DIAG_PEER and len(value) >= 4:
            (peer,) = struct.unpack_from("=I", value)
        offset += (length + 3) & ~3
    return path, peer


def _rtattr(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes (for doctests and tests)."""
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def parse_proc_net_unix(lines: Iterable[str], wanted: set[int] | None = None) -> list[UnixSocket]:
    """The sockets of ``/proc/net/unix`` (only inodes in ``wanted``, when given); no peers.

    >>> text = [
    ...     "Num       RefCount Protocol Flags    Type St Inode Path",
    ...     "0000000000000000: 00000002 00000000 00010000 0001 01 20301 /run/.s.PGSQL.5432",
    ...     "0000000000000000: 00000003 00000000 00000000 0001 03 48213 /run/.s.PGSQL.5432",
    ...     "0000000000000000: 00000003 00000000 00000000 0001 03 48214",
    ... ]
    >>> [(s.inode, s.state, s.path, s.peer) for s in parse_proc_net_unix(text, {48213, 48214})]
    [(48213, 'CONNECTED', '/run/.s.PGSQL.5432', None), (48214, 'CONNECTED', '', None)]
    >>> parse_proc_net_unix(text)[0].state  # unconnected, with __SO_ACCEPTCON
    'LISTEN'
    """
    found = []
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 7 or not fields[0].endswith(":"):
            continue
        try:
            inode = int(fields[6])
            kind = int(fields[4], 16)
            flags = int(fields[3], 16)
        except ValueError:
            continue
        if wanted is not None and inode not in wanted:
            continue
        state = "LISTEN" if flags & 0x10000 else _PROC_STATES.get(fields[5], fields[5])
        path = fields[7].strip() if len(fields) > 7 else ""
        found.append(UnixSocket(inode, TYPE_NAMES.get(kind, str(kind)), state, path, None))
    return found
