"""The kernel's TCP tables and local addresses, as pure functions: text and bytes in, records out.

Each line prints an endpoint as ``ADDRESS:PORT`` in hex. The port is a plain
number; the address is the raw ``in_addr`` / ``in6_addr`` printed as 32-bit
words in the host's byte order, so on little-endian machines every 4-byte group
reads backwards (``0100007F`` is 127.0.0.1). IPv4 clients of a dual-stack
socket appear in ``tcp6`` as IPv4-mapped addresses (``::ffff:127.0.0.1``).

Looking for a few endpoints in a busy host's table, encoding those few into the
table's spelling (:func:`encode_endpoint`) and comparing text is far cheaper
than decoding every line, which is what :func:`scan_for_local_endpoints` does.
The same records can be asked of the kernel one socket at a time over
``NETLINK_SOCK_DIAG`` (what ``ss`` uses): an exact lookup is a hash probe,
where reading a table walks every socket of the host. :func:`diag_request`
and :func:`parse_diag_replies` are that protocol's bytes.

``/proc/net/fib_trie`` and ``if_inet6`` say which addresses a network
namespace owns, which tells which namespaces' tables are worth reading.

Nothing here touches ``/proc`` or sockets: callers do the I/O, these functions
only read and write strings and bytes, so every case is a doctest.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

ByteOrder = Literal["little", "big"]
HOST_BYTE_ORDER: ByteOrder = sys.byteorder

# include/net/tcp_states.h
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
    "0C": "NEW_SYN_RECV",
}

_IPV4_HEX = 8
_IPV6_HEX = 32


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One line of a TCP table. ``inode`` is 0 for sockets no process holds any more
    (``TIME_WAIT``, orphans): they exist in the kernel but cannot have an owner.
    Addresses are canonical (see :func:`canonical_address`)."""

    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    state: str
    uid: int
    inode: int


def canonical_address(address: str) -> str:
    """One spelling per address, so pg_stat_activity and the kernel tables compare equal.

    ``inet::text`` carries a netmask, IPv6 link-local addresses may carry a zone,
    and an IPv4 client seen through a dual-stack socket is IPv4-mapped; all of
    these name the same host address.

    >>> canonical_address("127.0.0.1/32")
    '127.0.0.1'
    >>> canonical_address("::ffff:10.0.0.5")
    '10.0.0.5'
    >>> canonical_address("0:0:0::1/128")
    '::1'
    >>> canonical_address("fe80::1%eth0")
    'fe80::1'
    """
    text = address.split("/", 1)[0].split("%", 1)[0].strip()
    parsed = ipaddress.ip_address(text)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


@lru_cache(maxsize=1024)
def decode_address(hex_address: str, *, byteorder: ByteOrder = HOST_BYTE_ORDER) -> str:
    """A table address (8 hex digits for IPv4, 32 for IPv6) as canonical text.

    Cached: a table repeats the same few addresses on every line.

    >>> decode_address("0100007F", byteorder="little")
    '127.0.0.1'
    >>> decode_address("00000000000000000000000001000000", byteorder="little")
    '::1'
    >>> decode_address("0000000000000000FFFF00000100007F", byteorder="little")
    '127.0.0.1'
    >>> decode_address("B80D0120000000000000000001000000", byteorder="little")
    '2001:db8::1'
    >>> decode_address("7F000001", byteorder="big")
    '127.0.0.1'
    """
    if len(hex_address) not in (_IPV4_HEX, _IPV6_HEX):
        raise ValueError(f"not a /proc/net/tcp address: {hex_address!r}")
    packed = b"".join(
        int(hex_address[i : i + 8], 16).to_bytes(4, byteorder)
        for i in range(0, len(hex_address), 8)
    )
    parsed = ipaddress.ip_address(packed)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def encode_address(
    address: str, *, ipv6: bool, byteorder: ByteOrder = HOST_BYTE_ORDER
) -> str | None:
    """How ``address`` is spelled in ``tcp6`` (``ipv6=True``) or ``tcp``; None if never there.

    An IPv4 address can be in both tables (in ``tcp6`` as IPv4-mapped); an IPv6
    one only in ``tcp6``.

    >>> encode_address("127.0.0.1", ipv6=False, byteorder="little")
    '0100007F'
    >>> encode_address("127.0.0.1", ipv6=True, byteorder="little")
    '0000000000000000FFFF00000100007F'
    >>> encode_address("::1", ipv6=True, byteorder="little")
    '00000000000000000000000001000000'
    >>> encode_address("::1", ipv6=False) is None
    True
    """
    parsed = ipaddress.ip_address(canonical_address(address))
    if isinstance(parsed, ipaddress.IPv4Address):
        packed = (
            ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + parsed.packed).packed
            if ipv6
            else parsed.packed
        )
    elif ipv6:
        packed = parsed.packed
    else:
        return None
    return "".join(
        f"{int.from_bytes(packed[i : i + 4], byteorder):08X}" for i in range(0, len(packed), 4)
    )


def encode_endpoint(
    address: str, port: int, *, ipv6: bool, byteorder: ByteOrder = HOST_BYTE_ORDER
) -> str | None:
    """``ADDRESS:PORT`` as a table prints it, for text comparison; None if it cannot be there.

    >>> encode_endpoint("127.0.0.1", 5432, ipv6=False, byteorder="little")
    '0100007F:1538'
    """
    encoded = encode_address(address, ipv6=ipv6, byteorder=byteorder)
    return None if encoded is None else f"{encoded}:{port:04X}"


def decode_endpoint(text: str, *, byteorder: ByteOrder = HOST_BYTE_ORDER) -> tuple[str, int]:
    """``ADDRESS:PORT`` from a table as (canonical address, port).

    >>> decode_endpoint("0100007F:1538", byteorder="little")
    ('127.0.0.1', 5432)
    """
    address, _, port = text.partition(":")
    return decode_address(address, byteorder=byteorder), int(port, 16)


def parse_line(line: str, *, byteorder: ByteOrder = HOST_BYTE_ORDER) -> TcpSocket:
    """One data line of a TCP table.

    >>> parse_line(
    ...     "   3: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000"
    ...     "     0        0 48213 1 0000000000000000 20 4 30 10 -1",
    ...     byteorder="little",
    ... )  # doctest: +NORMALIZE_WHITESPACE
    TcpSocket(local_addr='127.0.0.1', local_port=50000, remote_addr='127.0.0.1',
              remote_port=5432, state='ESTABLISHED', uid=0, inode=48213)
    """
    fields = line.split()
    if len(fields) < 10:
        raise ValueError(f"not a /proc/net/tcp line: {line!r}")
    local_addr, local_port = decode_endpoint(fields[1], byteorder=byteorder)
    remote_addr, remote_port = decode_endpoint(fields[2], byteorder=byteorder)
    return TcpSocket(
        local_addr=local_addr,
        local_port=local_port,
        remote_addr=remote_addr,
        remote_port=remote_port,
        state=TCP_STATES.get(fields[3], fields[3]),
        uid=int(fields[7]),
        inode=int(fields[9]),
    )


def parse_proc_net_tcp(
    text: str, *, ipv6: bool, byteorder: ByteOrder = HOST_BYTE_ORDER
) -> list[TcpSocket]:
    """Every socket in the text of ``/proc/net/tcp`` (or ``tcp6`` with ``ipv6=True``).

    ``ipv6`` says which table the text came from; a line of the other kind is
    an error rather than a silently wrong address.

    >>> table = "\\n".join([
    ...     "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt ...",
    ...     "   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
    ...     "   106        0 6902 1 0000000098ffc16d 100 0 0 10 0",
    ...     "   1: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000"
    ...     "     0        0 48213 1 0000000000000000 20 4 30 10 -1",
    ... ])
    >>> [(s.local_port, s.remote_port, s.state, s.inode)
    ...  for s in parse_proc_net_tcp(table, ipv6=False, byteorder="little")]
    [(5432, 0, 'LISTEN', 6902), (50000, 5432, 'ESTABLISHED', 48213)]
    >>> parse_proc_net_tcp(table, ipv6=True)
    Traceback (most recent call last):
    ...
    ValueError: tcp line in a tcp6 table
    """
    width = _IPV6_HEX if ipv6 else _IPV4_HEX
    sockets = []
    for line in _data_lines(text.splitlines()):
        if line.split(None, 2)[1].index(":") != width:
            raise ValueError(f"{_table(not ipv6)} line in a {_table(ipv6)} table")
        sockets.append(parse_line(line, byteorder=byteorder))
    return sockets


def scan_for_local_endpoints(
    lines: Iterable[str], wanted: Container[str], *, byteorder: ByteOrder = HOST_BYTE_ORDER
) -> Iterator[tuple[str, TcpSocket]]:
    """Yield (endpoint text, record) for the lines whose local endpoint is in ``wanted``.

    ``wanted`` holds endpoints spelled as :func:`encode_endpoint` does. Only
    matching lines are parsed, so the cost is one slice and one set lookup per
    line; being a generator, the caller can stop reading the table as soon as
    it has what it came for.

    >>> lines = [
    ...     "  sl  local_address rem_address   st ...",
    ...     "   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
    ...     "   106        0 6902 1 0000000098ffc16d 100 0 0 10 0",
    ...     "   1: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000"
    ...     "     0        0 48213 1 0000000000000000 20 4 30 10 -1",
    ... ]
    >>> [(key, s.inode) for key, s in scan_for_local_endpoints(
    ...     lines, {"0100007F:C350"}, byteorder="little")]
    [('0100007F:C350', 48213)]
    """
    for line in lines:
        # "%4d: " puts the local endpoint at a fixed column until the table has
        # 10000 lines; past that (or in a header) fall back to finding the colon.
        if len(line) > 5 and line[4] == ":":
            end = line.find(" ", 6)
            endpoint = line[6:end]
        else:
            fields = line.split(None, 2)
            if len(fields) < 3 or not fields[0][:-1].isdigit():
                continue
            endpoint = fields[1]
        if endpoint in wanted:
            yield endpoint, parse_line(line, byteorder=byteorder)


def parse_fib_trie_local(text: str) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks a namespace treats as its own, from ``/proc/net/fib_trie``.

    A client socket's local address is always an address of its own network
    namespace, so a namespace without the address need not have its (costly)
    TCP table read. ``host LOCAL`` entries are those addresses; ``127.0.0.0/8``
    is one entry covering all of loopback.

    >>> text = "\\n".join([
    ...     "Main:",
    ...     "  +-- 0.0.0.0/0 3 0 5",
    ...     "     +-- 127.0.0.0/8 2 0 2",
    ...     "        +-- 127.0.0.0/31 1 0 0",
    ...     "           |-- 127.0.0.0",
    ...     "              /8 host LOCAL",
    ...     "           |-- 127.0.0.1",
    ...     "              /32 host LOCAL",
    ...     "        |-- 127.255.255.255",
    ...     "           /32 link BROADCAST",
    ...     "     +-- 192.0.2.0/24 2 0 2",
    ...     "           |-- 192.0.2.0",
    ...     "              /24 link UNICAST",
    ...     "           |-- 192.0.2.2",
    ...     "              /32 host LOCAL",
    ... ])
    >>> [str(network) for network in parse_fib_trie_local(text)]
    ['127.0.0.0/8', '127.0.0.1/32', '192.0.2.2/32']
    """
    networks: dict[ipaddress.IPv4Network, None] = {}
    address = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            address = stripped[4:]
        elif stripped.startswith("/") and stripped.endswith(" LOCAL") and address:
            prefix = stripped.split(None, 1)[0][1:]
            networks[ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)] = None
    return list(networks)


def parse_if_inet6(text: str) -> list[str]:
    """The IPv6 addresses of a namespace's interfaces, from ``/proc/net/if_inet6``.

    The address is printed as 32 hex digits in network order (no byte swapping).

    >>> parse_if_inet6("00000000000000000000000000000001 01 80 10 80       lo\\n"
    ...                "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\\n")
    ['::1', 'fe80::fc:ff:fe00:1']
    """
    addresses = []
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == _IPV6_HEX:
            addresses.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return addresses


# -- sock_diag: the same records, one exact lookup at a time --------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_ALL_STATES = 0xFFFFFFFF
_NO_COOKIE = b"\xff" * 8  # INET_DIAG_NOCOOKIE: do not check the socket's cookie
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid:
# ports and addresses in network order, interface, cookie.
_DIAG_REQUEST = struct.Struct("=BBBBI2s2s16s16sI8s")
# inet_diag_msg: family, state, timer, retransmits, inet_diag_sockid,
# expires, receive queue, write queue, uid, inode.
_DIAG_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
# Header and message in one go, ports as raw 16-bit numbers to byte-swap.
_DIAG_REPLY = struct.Struct("=IHHIIBBBBHH16s16sI8sIIIII")
_STATE_NAMES = {int(code, 16): name for code, name in TCP_STATES.items()}


def diag_request(seq: int, local: tuple[str, int], remote: tuple[str, int]) -> bytes:
    """A sock_diag request for the one TCP socket with exactly these two endpoints.

    >>> request = diag_request(7, ("127.0.0.1", 50000), ("127.0.0.1", 5432))
    >>> len(request), request[16] == socket.AF_INET, request[17] == socket.IPPROTO_TCP
    (72, True, True)
    >>> request[24:28].hex()  # source port 50000, destination port 5432
    'c3501538'
    """
    family, local_packed = _packed(local[0])
    remote_family, remote_packed = _packed(remote[0])
    if family != remote_family:
        raise ValueError(f"{local[0]} and {remote[0]} are not of one address family")
    body = _DIAG_REQUEST.pack(
        family,
        socket.IPPROTO_TCP,
        0,
        0,
        _ALL_STATES,
        local[1].to_bytes(2, "big"),
        remote[1].to_bytes(2, "big"),
        local_packed,
        remote_packed,
        0,
        _NO_COOKIE,
    )
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, seq, 0)
    return header + body


def parse_diag_replies(data: bytes) -> Iterator[tuple[int, TcpSocket | None]]:
    """(sequence number, socket) for each message of a netlink read; None: no such socket.

    >>> loopback = bytes([127, 0, 0, 1]).ljust(16, bytes(1))
    >>> sockid = (bytes.fromhex("c350"), bytes.fromhex("1538"), loopback, loopback, 0, _NO_COOKIE)
    >>> found = _DIAG_MESSAGE.pack(socket.AF_INET, 1, 0, 0, *sockid, 0, 0, 0, 1000, 48213)
    >>> missing = struct.pack("=i", -2) + bytes(16)  # an error: ENOENT, then our request
    >>> data = (_NLMSGHDR.pack(16 + len(found), SOCK_DIAG_BY_FAMILY, 0, 7, 0) + found
    ...         + _NLMSGHDR.pack(16 + len(missing), _NLMSG_ERROR, 0, 8, 0) + missing)
    >>> for seq, tcp in parse_diag_replies(data):
    ...     print(seq, tcp)  # doctest: +NORMALIZE_WHITESPACE
    7 TcpSocket(local_addr='127.0.0.1', local_port=50000, remote_addr='127.0.0.1',
                remote_port=5432, state='ESTABLISHED', uid=1000, inode=48213)
    8 None
    """
    offset = 0
    size = len(data)
    ntohs = socket.ntohs
    while offset + _NLMSGHDR.size <= size:
        length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if kind == SOCK_DIAG_BY_FAMILY and length >= _DIAG_REPLY.size:
            (*_, family, state, _, _, sport, dport, src, dst, _, _, _, _, _, uid, inode) = (
                _DIAG_REPLY.unpack_from(data, offset)
            )
            yield (
                seq,
                TcpSocket(
                    _diag_address(family, src),
                    ntohs(sport),
                    _diag_address(family, dst),
                    ntohs(dport),
                    _STATE_NAMES.get(state) or str(state),
                    uid,
                    inode,
                ),
            )
        elif kind == _NLMSG_ERROR:
            yield seq, None
        offset += (length + 3) & ~3


@lru_cache(maxsize=1024)
def _packed(address: str) -> tuple[int, bytes]:
    """Address family and the 16 bytes of an ``inet_diag_sockid`` address; cached."""
    parsed = ipaddress.ip_address(address)
    family = socket.AF_INET if parsed.version == 4 else socket.AF_INET6
    return family, parsed.packed.ljust(16, bytes(1))


@lru_cache(maxsize=1024)
def _diag_address(family: int, raw: bytes) -> str:
    packed = raw[:4] if family == socket.AF_INET else raw
    address = ipaddress.ip_address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _data_lines(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        stripped = line.lstrip()
        if stripped and stripped[0].isdigit():
            yield line


def _table(ipv6: bool) -> str:
    return "tcp6" if ipv6 else "tcp"
