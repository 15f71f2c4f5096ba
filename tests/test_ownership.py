"""Which process owns each backend's client socket: parsers on literal tables, the rest for real.

The parsers are fed text captured from /proc/net/tcp and tcp6; everything else
runs against the real /proc, real sockets, real child processes and the real
test server, because the interesting failures (namespaces, races, forked
sharers) only exist there.
"""

from __future__ import annotations

import doctest
import ipaddress
import os
import select
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING

import psutil
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiler import model
from profiler.capture.processes import spawn_python_until_ready, stop_pid
from profiler.model import Owner
from profiler.targets import backend_clients, socket_holders, sockets
from profiler.targets.backend_clients import BackendClient, classify
from profiler.targets.ownership import OwnershipResolver
from profiler.targets.sockets import (
    ByteOrder,
    decode_endpoint,
    encode_endpoint,
    parse_proc_net_tcp,
    scan_for_local_endpoints,
)

if TYPE_CHECKING:
    from typing_extensions import LiteralString

# Captured from /proc/net/tcp (x86_64): a listener, a loopback pair, a TIME_WAIT.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 6902 1 0000000098ffc16d 100 0 0 10 0
   1: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 48213 1 00000000a0c1f2e3 20 4 30 10 -1
   2: 0100007F:1538 0100007F:C350 01 00000000:00000000 00:00000000 00000000   106        0 48214 1 00000000b0c1f2e3 20 4 29 10 -1
   3: 0200000A:D431 0100000A:1538 06 00000000:00000000 03:000016F9 00000000     0        0 0 3 0000000000000000
"""  # noqa: E501

# Captured from /proc/net/tcp6: a dual-stack listener, ::1 client, an IPv4-mapped client.
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 7001 1 0000000011111111 100 0 0 10 0
   1: 00000000000000000000000001000000:B7E2 00000000000000000000000001000000:1538 01 00000000:00000000 00:00000000 00000000  1000        0 7002 1 0000000022222222 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:9C41 0000000000000000FFFF00000100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 7003 1 0000000033333333 20 4 30 10 -1
   3: B80D0120000000000000000001000000:E000 B80D0120000000000000000002000000:1538 08 00000000:00000000 00:00000000 00000000    33        0 7004 1 0000000044444444 20 4 30 10 -1
"""  # noqa: E501

LITTLE: ByteOrder = "little"
CONNECT = """
import os, time, psycopg
conn = psycopg.connect(os.environ["OWNERSHIP_DSN"], application_name=os.environ["OWNERSHIP_APP"])
"""
CHILD_CONNECTS = (
    CONNECT
    + """
print("ready", flush=True)
time.sleep(120)
"""
)
# A master that connects, then forks a worker that inherits the connection.
CHILD_CONNECTS_THEN_FORKS = (
    CONNECT
    + """
worker = os.fork()
if worker == 0:
    time.sleep(120)
    os._exit(0)
print("ready", flush=True)
os.waitpid(worker, 0)  # reaped as soon as it is stopped
time.sleep(120)
"""
)
CHILD_NAMED_PGBOUNCER = (
    """
import ctypes
ctypes.CDLL(None).prctl(15, b"pgbouncer", 0, 0, 0)  # PR_SET_NAME: what ps and comm show
"""
    + CHILD_CONNECTS
)


# -- parsing literal tables --------------------------------------------------------------


def test_the_modules_doctests_pass() -> None:
    for module in (sockets, backend_clients, socket_holders, model):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__


def test_ipv4_table_decodes_listeners_connections_and_closing_sockets() -> None:
    # WHEN
    table = parse_proc_net_tcp(TCP, ipv6=False, byteorder=LITTLE)
    # THEN
    assert [
        (s.local_addr, s.local_port, s.remote_port, s.state, s.uid, s.inode) for s in table
    ] == [
        ("127.0.0.1", 5432, 0, "LISTEN", 106, 6902),
        ("127.0.0.1", 50000, 5432, "ESTABLISHED", 1000, 48213),
        ("127.0.0.1", 5432, 50000, "ESTABLISHED", 106, 48214),
        ("10.0.0.2", 54321, 5432, "TIME_WAIT", 0, 0),
    ]
    assert table[3].remote_addr == "10.0.0.1"


def test_ipv6_table_decodes_ipv4_mapped_clients_as_ipv4() -> None:
    # WHEN
    table = parse_proc_net_tcp(TCP6, ipv6=True, byteorder=LITTLE)
    # THEN pg_stat_activity shows such a client as 127.0.0.1, so the table must too
    assert [(s.local_addr, s.local_port, s.remote_addr, s.state) for s in table] == [
        ("::", 5432, "::", "LISTEN"),
        ("::1", 47074, "::1", "ESTABLISHED"),
        ("127.0.0.1", 40001, "127.0.0.1", "ESTABLISHED"),
        ("2001:db8::1", 57344, "2001:db8::2", "CLOSE_WAIT"),
    ]


def test_a_table_of_the_other_family_is_refused() -> None:
    with pytest.raises(ValueError, match="tcp6 line in a tcp table"):
        parse_proc_net_tcp(TCP6, ipv6=False)


def test_scan_finds_wanted_local_endpoints_in_either_table() -> None:
    # GIVEN the clients pg_stat_activity shows, spelled as each table spells them
    wanted4 = {_spelled("127.0.0.1/32", 50000, ipv6=False)}
    wanted6 = {_spelled("127.0.0.1", 40001, ipv6=True), _spelled("::1/128", 47074, ipv6=True)}
    # WHEN
    found4 = list(scan_for_local_endpoints(TCP.splitlines(), wanted4, byteorder=LITTLE))
    found6 = list(scan_for_local_endpoints(TCP6.splitlines(), wanted6, byteorder=LITTLE))
    # THEN only the client ends match, never the server's end of the same connection
    assert [s.inode for _, s in found4] == [48213]
    assert sorted(s.inode for _, s in found6) == [7002, 7003]


def test_scan_reads_tables_with_more_than_ten_thousand_lines() -> None:
    # "%4d: " widens past line 9999, moving every column one place right.
    line = TCP.splitlines()[2].replace("   1: ", "12345: ", 1)
    wanted = {_spelled("127.0.0.1", 50000, ipv6=False)}
    found = scan_for_local_endpoints([line], wanted, byteorder=LITTLE)
    assert [s.inode for _, s in found] == [48213]


def _spelled(address: str, port: int, *, ipv6: bool) -> str:
    endpoint = encode_endpoint(address, port, ipv6=ipv6, byteorder=LITTLE)
    assert endpoint is not None
    return endpoint


@given(
    address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    port=st.integers(min_value=0, max_value=65535),
    byteorder=st.sampled_from(["little", "big"]),
)
def test_an_endpoint_encodes_to_what_the_kernel_prints_and_back(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, byteorder: ByteOrder
) -> None:
    expected = str(getattr(address, "ipv4_mapped", None) or address)
    for ipv6 in (False, True):
        encoded = encode_endpoint(str(address), port, ipv6=ipv6, byteorder=byteorder)
        if encoded is None:
            assert not ipv6 and address.version == 6
            continue
        assert encoded == encoded.upper()
        assert decode_endpoint(encoded, byteorder=byteorder) == (expected, port)


# -- what can be said without /proc ---------------------------------------------------------

STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("client", "kind"),
    [
        (BackendClient(10, STARTED, None, -1), "unix-socket"),
        (BackendClient(11, STARTED, None, None), "background"),
        (BackendClient(12, None, None, None), "unknown"),  # hidden from a role without rights
        (BackendClient(13, STARTED, "not an address", 5000), "unknown"),
    ],
)
def test_clients_without_a_tcp_endpoint_are_classified_without_proc(
    client: BackendClient, kind: str
) -> None:
    # WHEN (Unix-socket clients only classified: tests/test_unix_sockets.py looks them up)
    resolver = OwnershipResolver(unix_sockets=False)
    owners = resolver.resolve([client])
    # THEN
    assert owners[client.pid].kind == kind
    assert owners[client.pid].to_json() is None
    assert resolver.scans == 0


def test_tcp_clients_need_a_lookup() -> None:
    assert classify(BackendClient(7, STARTED, "10.1.2.3/32", 41000)) is None


def test_owner_json_is_pid_and_cmdline_or_null() -> None:
    owner = Owner("process", 42, "gunicorn: worker [app]", pids=(41, 42))
    assert owner.to_json() == {
        "pid": 42,
        "cmdline": "gunicorn: worker [app]",
        "kind": "process",
        "detail": "",
        "via": None,
    }
    assert Owner("remote", detail="elsewhere").to_json() is None
    assert Owner.from_record(owner.to_record()) == owner


@pytest.mark.parametrize(
    ("comm", "cmdline", "pooler"),
    [
        ("pgbouncer", "/usr/sbin/pgbouncer -d /etc/pgbouncer/pgbouncer.ini", "pgbouncer"),
        ("odyssey", "/usr/bin/odyssey /etc/odyssey.conf", "odyssey"),
        ("pgcat", "pgcat /etc/pgcat/pgcat.toml", "pgcat"),
        ("pgpool", "pgpool: PostgreSQL connection", "pgpool"),
        ("beam.smp", "/app/bin/beam.smp -- -root /app -sname supavisor@pool1", "supavisor"),
        ("python", "python -m gunicorn app:app", None),
        ("less", "less /var/log/pgbouncer/pgbouncer.log", None),
        ("python3", "python3 -m profiler lab up --via pgbouncer", None),
        ("granian", "granian --interface asgi app:app --env DB_HOST=pgbouncer", None),
    ],
)
def test_poolers_are_recognised_by_name_or_command_line(
    comm: str, cmdline: str, pooler: str | None
) -> None:
    assert socket_holders.pooler_name(comm, cmdline) == pooler


# -- real sockets and processes, no PostgreSQL ---------------------------------------------


def test_an_address_no_namespace_has_is_remote_without_reading_any_table() -> None:
    # GIVEN a client address from TEST-NET-3: no interface on this host has it
    client = BackendClient(4_000_001, STARTED, "203.0.113.9/32", 41000)
    # WHEN
    resolver = OwnershipResolver(server_port=5432)
    owner = resolver.resolve([client])[client.pid]
    # THEN
    assert owner.kind == "remote", owner
    assert resolver.last_scan is not None
    assert resolver.last_scan.tables_read == ()
    assert resolver.last_scan.fd_dirs_read == 0


def test_a_client_in_another_network_namespace_is_found_through_its_namespace() -> None:
    # GIVEN a process in a network namespace of its own, holding a TCP connection
    # to a listener of its own (it cannot reach our loopback, nor we its)
    code = (
        "import os, socket, time\n"
        "server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen()\n"
        "client = socket.create_connection(server.getsockname()); peer, _ = server.accept()\n"
        "print('ready', os.getpid(), client.getsockname()[1], server.getsockname()[1],"
        " flush=True)\n"
        "time.sleep(120)\n"
    )
    with _in_new_network_namespace(code) as (pid, client_port, server_port):
        theirs = os.readlink(f"/proc/{pid}/ns/net")
        client = BackendClient(4_000_002, STARTED, "127.0.0.1", client_port)
        # WHEN
        resolver = OwnershipResolver(server_port=server_port)
        owner = resolver.resolve([client])[client.pid]
    # THEN
    assert (owner.kind, owner.pid) == ("process", pid), owner
    scan = resolver.last_scan
    assert scan is not None
    ours = os.readlink("/proc/self/ns/net")
    assert theirs != ours
    namespaces = [namespace for namespace, _ in scan.tables_read]
    assert namespaces[0] == ours, "ours is read first: loopback exists in every namespace"
    assert (theirs, "tcp") in scan.tables_read
    assert len(scan.tables_read) == len(set(scan.tables_read)), "a table was read twice"


# -- the real test server ----------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("sock_diag", [True, False], ids=["sock_diag", "proc-tables"])
def test_connections_of_this_process_and_its_threads_are_owned_by_it(
    postgres_dsn: str, sock_diag: bool
) -> None:
    # GIVEN connections opened by the test process itself and by two of its threads
    with _connections(postgres_dsn, 2) as mine, _connections_in_threads(postgres_dsn, 2) as theirs:
        clients, port = _backends(postgres_dsn, mine + theirs)
        # WHEN
        resolver = OwnershipResolver(server_port=port, sock_diag=sock_diag)
        owners = resolver.resolve(clients)
    # THEN
    for pid in mine + theirs:
        assert (owners[pid].kind, owners[pid].pid) == ("process", os.getpid()), owners[pid]
        assert "python" in (owners[pid].cmdline or "").lower()
    scan = resolver.last_scan
    assert scan is not None
    if sock_diag:
        assert scan.diag_lookups == len(clients) and scan.tables_read == ()
    else:
        assert scan.diag_lookups == 0 and scan.tables_read


@pytest.mark.postgres
@pytest.mark.parametrize("sock_diag", [True, False], ids=["sock_diag", "proc-tables"])
def test_a_connection_of_a_child_process_is_owned_by_the_child(
    postgres_dsn: str, sock_diag: bool
) -> None:
    # GIVEN a child process holding a connection
    with _child(CHILD_CONNECTS, postgres_dsn) as (child, application):
        clients, port = _backends(postgres_dsn, application=application)
        # WHEN
        owners = OwnershipResolver(server_port=port, sock_diag=sock_diag).resolve(clients)
    # THEN
    (owner,) = owners.values()
    assert (owner.kind, owner.pid, owner.pids) == ("process", child.pid, (child.pid,)), owner
    assert owner.cmdline is not None and "-c" in owner.cmdline


@pytest.mark.postgres
def test_a_socket_shared_by_fork_after_connect_is_owned_by_the_worker(postgres_dsn: str) -> None:
    # GIVEN a parent that connected, then forked a worker (gunicorn --preload)
    with _child(CHILD_CONNECTS_THEN_FORKS, postgres_dsn) as (parent, application):
        (worker,) = [child.pid for child in psutil.Process(parent.pid).children()]
        try:
            clients, port = _backends(postgres_dsn, application=application)
            # WHEN
            owners = OwnershipResolver(server_port=port).resolve(clients)
        finally:
            stop_pid(worker)
    # THEN the worker, not the master, and both are listed
    (owner,) = owners.values()
    assert (owner.kind, owner.pid) == ("process", worker), owner
    assert owner.pids == tuple(sorted((parent.pid, worker)))
    assert "shared by 2 processes" in owner.detail


@pytest.mark.postgres
def test_a_connection_held_by_a_pooler_names_the_pooler(postgres_dsn: str) -> None:
    # GIVEN a process whose name is pgbouncer holds the connection
    with _child(CHILD_NAMED_PGBOUNCER, postgres_dsn) as (child, application):
        clients, port = _backends(postgres_dsn, application=application)
        # WHEN
        owners = OwnershipResolver(server_port=port).resolve(clients)
    # THEN
    (owner,) = owners.values()
    assert (owner.kind, owner.pid, owner.detail) == ("pooler", child.pid, "pgbouncer"), owner


@pytest.mark.postgres
def test_unix_socket_and_background_backends_are_classified(postgres_dsn: str) -> None:
    # GIVEN a backend connected through the server's Unix socket, if we may reach it
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        directory = str(_one(conn, "SHOW unix_socket_directories"))
        port = conn.info.port
    directory = directory.split(",", maxsplit=1)[0].strip()
    if not directory or not os.access(directory, os.X_OK):
        pytest.skip(f"the server's socket directory {directory!r} is not accessible")
    try:
        local = psycopg.connect(postgres_dsn, host=directory, port=port, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"cannot connect through the Unix socket: {exc}")
    with local:
        unix_pid = local.info.backend_pid
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid, backend_start, client_addr::text, client_port FROM pg_stat_activity"
                " WHERE pid = %s OR client_port IS NULL",
                (unix_pid,),
            ).fetchall()
        # WHEN Unix-socket clients are only classified (tests/test_unix_sockets.py resolves them)
        resolver = OwnershipResolver(unix_sockets=False)
        owners = resolver.resolve([BackendClient(*row) for row in rows])
    # THEN
    assert owners[unix_pid].kind == "unix-socket"
    background = [pid for pid in owners if pid != unix_pid]
    assert background, "a server always has background processes"
    assert {owners[pid].kind for pid in background} == {"background"}
    assert resolver.scans == 0


@pytest.mark.postgres
def test_a_second_resolve_of_the_same_backends_does_not_scan_proc(postgres_dsn: str) -> None:
    # GIVEN backends resolved once
    with _connections(postgres_dsn, 3) as pids:
        clients, port = _backends(postgres_dsn, pids)
        resolver = OwnershipResolver(server_port=port)
        first = resolver.resolve(clients)
        scan = resolver.last_scan
        # WHEN
        second = resolver.resolve(clients)
    # THEN
    assert second == first
    assert resolver.scans == 1
    assert resolver.last_scan is scan
    assert resolver.cache_hits == len(clients)


@pytest.mark.postgres
def test_only_new_backends_are_scanned_and_departed_ones_are_forgotten(
    postgres_dsn: str,
) -> None:
    with _connections(postgres_dsn, 2) as old, _connections(postgres_dsn, 1) as new:
        clients, port = _backends(postgres_dsn, old + new)
        before = [c for c in clients if c.pid in old]
        resolver = OwnershipResolver(server_port=port)
        resolver.resolve(before)
        # WHEN a new backend appears
        owners = resolver.resolve(clients)
        # THEN only it was scanned for
        assert resolver.scans == 2
        assert resolver.last_scan is not None and resolver.last_scan.backends == 1
        assert owners[new[0]].pid == os.getpid()
        # WHEN it leaves and comes back, it was forgotten meanwhile
        resolver.resolve(before)
        resolver.resolve(clients)
        assert resolver.scans == 3


@pytest.mark.postgres
def test_our_namespace_table_is_read_once_for_all_new_backends(postgres_dsn: str) -> None:
    # GIVEN several new backends, looked up through the tables
    with _connections(postgres_dsn, 3) as pids:
        clients, port = _backends(postgres_dsn, pids)
        resolver = OwnershipResolver(server_port=port, sock_diag=False)
        # WHEN
        owners = resolver.resolve(clients)
    # THEN one pass: our namespace's tcp table once, and the fds of its processes once
    assert {owner.pid for owner in owners.values()} == {os.getpid()}
    scan = resolver.last_scan
    assert scan is not None
    ours = os.readlink("/proc/self/ns/net")
    assert scan.tables_read.count((ours, "tcp")) == 1
    assert len(scan.tables_read) == len(set(scan.tables_read))
    assert scan.fd_dirs_read <= scan.processes


# -- helpers -------------------------------------------------------------------------------


def _backends(
    dsn: str, pids: list[int] | None = None, *, application: str | None = None
) -> tuple[list[BackendClient], int]:
    """pg_stat_activity rows of the given backends (by pid or application), and the port."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        port = int(str(_one(conn, "SELECT inet_server_port()")))
        rows = conn.execute(
            "SELECT pid, backend_start, client_addr::text, client_port FROM pg_stat_activity"
            " WHERE pid = ANY(%s) OR application_name = %s",
            (pids or [], application),
        ).fetchall()
    clients = [BackendClient(*row) for row in rows]
    assert clients, f"no backends for pids {pids} / application {application!r}"
    return clients, port


@contextmanager
def _connections(dsn: str, n: int) -> Iterator[list[int]]:
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(n)]
    try:
        yield [conn.info.backend_pid for conn in conns]
    finally:
        for conn in conns:
            conn.close()


@contextmanager
def _connections_in_threads(dsn: str, n: int) -> Iterator[list[int]]:
    """Connections each opened, held and closed by a thread of its own, as a pool's are."""
    release = threading.Event()
    pids: list[int] = []
    ready = threading.Barrier(n + 1, timeout=30)

    def hold() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            pids.append(conn.info.backend_pid)
            ready.wait()
            release.wait(60)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
        yield list(pids)
    finally:
        release.set()
        for thread in threads:
            thread.join(10)


@contextmanager
def _child(code: str, dsn: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A child process running ``code`` with a connection named uniquely; stopped by pid."""
    application = f"ownership-test-{uuid.uuid4().hex[:8]}"
    child = spawn_python_until_ready(
        code, env={**os.environ, "OWNERSHIP_DSN": dsn, "OWNERSHIP_APP": application}
    )
    try:
        yield child, application
    finally:
        stop_pid(child.pid)
        child.communicate(timeout=10)


@contextmanager
def _in_new_network_namespace(code: str) -> Iterator[tuple[int, int, int]]:
    """Run ``code`` in a new network namespace with loopback up; yield what it prints."""
    launcher = subprocess.Popen(
        [
            "unshare",
            "--net",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" -c "$1"',
            sys.executable,
            code,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    inner = None
    try:
        assert launcher.stdout is not None
        line = _readline(launcher.stdout, timeout=20)
        if not line.startswith("ready"):
            stop_pid(launcher.pid)
            _, stderr = launcher.communicate(timeout=10)
            pytest.skip(f"cannot make a network namespace here: {stderr.strip()[-200:]}")
        _, pid, client_port, server_port = line.split()
        inner = int(pid)
        yield inner, int(client_port), int(server_port)
    finally:
        if inner is not None:
            stop_pid(inner)
        stop_pid(launcher.pid)
        launcher.communicate(timeout=10)


def _one(conn: psycopg.Connection[tuple[object, ...]], sql: LiteralString) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _readline(stream: IO[str], timeout: float = 20.0) -> str:
    readable, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().strip() if readable else ""
