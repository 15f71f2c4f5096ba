"""The client side of a PostgreSQL backend, and what it tells before /proc is read.

``pg_stat_activity`` says where a backend's client connects from
(``client_addr``, ``client_port``). Many rows say all there is to say on their
own: a Unix-socket client, a background worker, a row hidden from our role, an
address that does not parse. :func:`classify` answers those without touching
``/proc``, so the resolver (:mod:`profiler.targets.ownership`) scans only for
the TCP clients (and, when PostgreSQL runs here, the Unix-socket ones) that
need a socket lookup.

The records live apart from the resolver because the PgBouncer join
(:mod:`profiler.targets.pooler`, :mod:`profiler.pg.pgbouncer`) builds and reads
them too, without needing the scanner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Protocol

from profiler.model import Owner
from profiler.targets.sockets import canonical_address, encode_address


class ClientSide(Protocol):
    """The client side of one backend, as ``pg_stat_activity`` shows it.

    ``client_port`` is -1 for Unix-socket clients and NULL for background
    workers; ``backend_start`` tells a backend from a later one reusing its pid.
    The sampler's rows (``ActivitySample``) qualify as they are, so a snapshot
    builds no intermediate objects.
    """

    @property
    def pid(self) -> int: ...
    @property
    def backend_start(self) -> float | datetime | None: ...
    @property
    def client_addr(self) -> str | None: ...
    @property
    def client_port(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class BackendClient:
    """A :class:`ClientSide` built by hand (tests, callers without a sample)."""

    pid: int
    backend_start: float | datetime | None
    client_addr: str | None
    client_port: int | None


def classify(client: ClientSide) -> Owner | None:
    """What can be said without looking at /proc; None when the socket must be looked up.

    >>> classify(BackendClient(7, None, None, -1)).kind
    'unix-socket'
    >>> classify(BackendClient(7, datetime(2024, 1, 1), None, None)).kind
    'background'
    >>> classify(BackendClient(7, None, None, None)).kind
    'unknown'
    >>> classify(BackendClient(7, datetime(2024, 1, 1), "127.0.0.1/32", 50000)) is None
    True
    """
    port = client.client_port
    if port == -1:
        return Owner("unix-socket", detail="connected through a Unix socket: no TCP endpoint")
    if port is None:
        if client.backend_start is None:
            # Rows of other roles' sessions are blanked for roles without the right.
            return Owner(
                "unknown",
                detail="pg_stat_activity hides this backend's client: GRANT pg_read_all_stats",
            )
        return Owner("background", detail="a background or parallel worker: no client")
    if not client.client_addr:
        return Owner("unknown", detail=f"no client address for client port {port}")
    if address_forms(client.client_addr) is None:
        return Owner("unknown", detail=f"unreadable client address {client.client_addr!r}")
    return None


@lru_cache(maxsize=4096)
def address_forms(client_addr: str) -> tuple[str, str | None, str | None] | None:
    """(canonical, spelling in ``tcp``, spelling in ``tcp6``) of an address, or None.

    Hundreds of backends share a handful of client addresses; parsing each once
    keeps a cold resolve from spending its time in ``ipaddress``.

    >>> address_forms("::ffff:127.0.0.1")[0]
    '127.0.0.1'
    >>> address_forms("not an address") is None
    True
    """
    try:
        canonical = canonical_address(client_addr)
    except ValueError:
        return None
    return (
        canonical,
        encode_address(canonical, ipv6=False),
        encode_address(canonical, ipv6=True),
    )


def client_address(client: ClientSide) -> str:
    """The client's address as the kernel's tables spell it once decoded (canonical)."""
    forms = address_forms(client.client_addr or "")
    return forms[0] if forms else str(client.client_addr)
