"""Owners of Unix-socket clients, for real: real socket pairs, real servers, real clients.

The netlink messages are checked against the kernel with socket pairs (each
end has a real inode and a real peer); ownership against the embedded server's
socket and, when present, the machine's PostgreSQL at /var/run/postgresql.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from profiler.model import Owner
from profiler.targets.backend_clients import BackendClient
from profiler.targets.ownership import OwnershipResolver
from profiler.targets.sockets import NETLINK_SOCK_DIAG
from profiler.targets.unix_diag import (
    UnixSocket,
    parse_proc_net_unix,
    parse_unix_replies,
    unix_request,
)
from profiler.targets.unix_sockets import NOT_LOCAL

MACHINE_SOCKET_DIR = "/var/run/postgresql"
ROWS = (
    "SELECT pid, backend_start, client_addr::text, client_port FROM pg_stat_activity"
    " WHERE backend_type = 'client backend'"
)

HOLDER = """
import sys, time, psycopg
conn = psycopg.connect(sys.argv[1] if len(sys.argv) > 1 else {dsn!r})
pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # opens the transaction
print("ready", flush=True)
print(pid, flush=True)
time.sleep(120)
"""


# -- the netlink messages, against the kernel ----------------------------------------


def _ask(inodes: list[int]) -> dict[int, UnixSocket | None]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(2)
        sock.send(b"".join(unix_request(i, inode) for i, inode in enumerate(inodes)))
        answers: dict[int, UnixSocket | None] = {}
        while len(answers) < len(inodes):
            for seq, unix in parse_unix_replies(sock.recv(1 << 16)):
                answers[inodes[seq]] = unix
        return answers


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_sock_diag_names_each_end_of_a_socket_pair_as_the_others_peer() -> None:
    # GIVEN a connected stream pair: two real inodes, each the other's peer
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        one, other = _inode(left), _inode(right)
        # WHEN
        answers = _ask([one, other])
    # THEN
    assert answers[one] == UnixSocket(one, "STREAM", "CONNECTED", "", other)
    assert answers[other] == UnixSocket(other, "STREAM", "CONNECTED", "", one)


def test_an_accepted_socket_carries_the_listeners_path_and_the_clients_inode(
    tmp_path: Path,
) -> None:
    # GIVEN a listener on a path, a client connected to it and the accepted end
    path = str(tmp_path / ".s.PGSQL.5432")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            accepted, _ = listener.accept()
            with accepted:
                inodes = _inode(listener), _inode(accepted), _inode(client)
                # WHEN
                answers = _ask(list(inodes))
    # THEN
    listening, served, connecting = inodes
    assert answers[listening] == UnixSocket(listening, "STREAM", "LISTEN", path, 0)
    assert answers[served] == UnixSocket(served, "STREAM", "CONNECTED", path, connecting)
    assert answers[connecting] == UnixSocket(connecting, "STREAM", "CONNECTED", "", served)


def test_a_closed_peer_reads_as_peer_zero_and_a_closed_socket_as_missing() -> None:
    # GIVEN a pair whose right end is closed, and an inode no socket has any more
    left, right = socket.socketpair()
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone_inode = _inode(gone)
    gone.close()
    right.close()
    with left:
        # WHEN
        answers = _ask([_inode(left), gone_inode])
        # THEN
        closed = answers[_inode(left)]
        assert closed is not None and closed.peer == 0
    assert answers[gone_inode] is None


def test_proc_net_unix_shows_the_sockets_of_a_pair_but_not_their_peers() -> None:
    # GIVEN a connected pair
    left, right = socket.socketpair()
    with left, right:
        inodes = {_inode(left), _inode(right)}
        # WHEN
        with open("/proc/self/net/unix", encoding="utf-8") as file:
            found = parse_proc_net_unix(file, inodes)
    # THEN the fallback knows they are connected stream sockets, not which is whose peer
    assert {s.inode for s in found} == inodes
    assert {(s.type, s.state, s.peer) for s in found} == {("STREAM", "CONNECTED", None)}


# -- owners, against real servers -----------------------------------------------------


def _socket_dsn(dsn: str) -> str | None:
    """``dsn`` through the server's Unix socket, or None when it cannot be reached so."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW unix_socket_directories").fetchone()
        port = conn.info.port
    directory = str(row[0] if row else "").split(",", maxsplit=1)[0].strip()
    if not directory or not os.access(directory, os.X_OK):
        return None
    dsn_via_socket = make_conninfo(dsn, host=directory, port=port)
    try:
        psycopg.connect(dsn_via_socket).close()
    except psycopg.OperationalError:
        return None
    return dsn_via_socket


@pytest.fixture(params=["embedded", "machine"])
def unix_dsn(request: pytest.FixtureRequest) -> str:
    """The test server through its socket directory; also the machine's PostgreSQL 15."""
    if request.param == "embedded":
        found = _socket_dsn(request.getfixturevalue("postgres_dsn"))
    else:
        if not os.path.exists(f"{MACHINE_SOCKET_DIR}/.s.PGSQL.5432"):
            pytest.skip(f"no PostgreSQL socket in {MACHINE_SOCKET_DIR}")
        found = _socket_dsn(f"postgresql://postgres@/postgres?host={MACHINE_SOCKET_DIR}")
    if found is None:
        pytest.skip(f"the {request.param} server cannot be reached through a Unix socket")
    return found


def _owners(dsn: str, **options: bool) -> tuple[dict[int, Owner], OwnershipResolver]:
    with psycopg.connect(dsn, autocommit=True) as monitor:
        clients = [BackendClient(*row) for row in monitor.execute(ROWS).fetchall()]
        resolver = OwnershipResolver(**options)
        return resolver.resolve(clients), resolver


@pytest.fixture
def held_in_thread(unix_dsn: str) -> Iterator[Callable[[], int]]:
    """Backends left idle in transaction by threads of this process, over the socket."""
    release = threading.Event()
    conns: list[psycopg.Connection[tuple[object, ...]]] = []
    threads: list[threading.Thread] = []

    def hold() -> int:
        conn = psycopg.connect(unix_dsn)
        conns.append(conn)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        thread = threading.Thread(target=release.wait, args=(60,), daemon=True)
        thread.start()
        threads.append(thread)
        return int(row[0])

    yield hold
    release.set()
    for thread in threads:
        thread.join(10)
    for conn in conns:
        conn.close()


@pytest.mark.postgres
def test_a_transaction_held_over_the_unix_socket_is_owned_by_this_process(
    unix_dsn: str, held_in_thread: Callable[[], int]
) -> None:
    # GIVEN a thread of ours holding a transaction open over the Unix socket
    backend = held_in_thread()
    # WHEN
    owners, resolver = _owners(unix_dsn)
    # THEN it is ours, exactly as a TCP client would be
    owner = owners[backend]
    assert (owner.kind, owner.pid, owner.pids) == ("process", os.getpid(), (os.getpid(),))
    assert "pytest" in (owner.cmdline or "")
    assert resolver.last_scan is not None and resolver.last_scan.diag_lookups >= 1
    # AND a second resolve answers from the cache
    scans = resolver.scans
    with psycopg.connect(unix_dsn, autocommit=True) as monitor:
        again = resolver.resolve([BackendClient(*r) for r in monitor.execute(ROWS).fetchall()])
    assert again[backend] == owner
    assert resolver.scans == scans + 1  # only the new monitor's backend was looked up


def _hold_in_child(
    python_process: Callable[..., subprocess.Popen[str]], dsn: str
) -> tuple[subprocess.Popen[str], int]:
    child = python_process(HOLDER.format(dsn=dsn))
    assert child.stdout is not None
    return child, int(child.stdout.readline())


@pytest.mark.postgres
def test_two_client_processes_are_two_owners(
    unix_dsn: str, python_process: Callable[..., subprocess.Popen[str]]
) -> None:
    # GIVEN two processes each holding a transaction over the socket
    first, first_backend = _hold_in_child(python_process, unix_dsn)
    second, second_backend = _hold_in_child(python_process, unix_dsn)
    # WHEN
    owners, _ = _owners(unix_dsn)
    # THEN
    assert owners[first_backend].pid == first.pid
    assert owners[second_backend].pid == second.pid
    assert owners[first_backend].kind == owners[second_backend].kind == "process"


FORKS_AFTER_CONNECT = """
import os, time, psycopg
conn = psycopg.connect({dsn!r})
pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
worker = os.fork()
if worker == 0:
    time.sleep(120)
    os._exit(0)
print("ready", flush=True)
print(pid, worker, flush=True)
os.waitpid(worker, 0)
time.sleep(120)
"""


@pytest.mark.postgres
def test_a_unix_socket_shared_by_fork_after_connect_is_owned_by_the_worker(
    unix_dsn: str, python_process: Callable[..., subprocess.Popen[str]]
) -> None:
    # GIVEN a master that connected over the socket, then forked a worker (--preload)
    master = python_process(FORKS_AFTER_CONNECT.format(dsn=unix_dsn))
    assert master.stdout is not None
    backend, worker = map(int, master.stdout.readline().split())
    try:
        # WHEN
        owners, _ = _owners(unix_dsn)
    finally:
        os.kill(worker, signal.SIGKILL)
    # THEN the worker, with both sharers listed, as for TCP
    owner = owners[backend]
    assert (owner.kind, owner.pid) == ("process", worker), owner
    assert owner.pids == tuple(sorted((master.pid, worker)))
    assert "shared by 2 processes" in owner.detail


def _host_pid(backend: int) -> int:
    """The backends of these servers share our PID namespace."""
    with open(f"/proc/{backend}/comm", encoding="utf-8") as file:
        assert file.read().strip() == "postgres"
    return backend


@pytest.mark.postgres
def test_a_backend_whose_client_has_exited_is_closing_not_owned(
    unix_dsn: str, python_process: Callable[..., subprocess.Popen[str]]
) -> None:
    # GIVEN a backend held by a child, frozen so that it cannot notice its client leaving
    child, backend = _hold_in_child(python_process, unix_dsn)
    os.kill(_host_pid(backend), signal.SIGSTOP)
    try:
        child.kill()
        child.wait(10)
        # WHEN
        owners, _ = _owners(unix_dsn)
    finally:
        os.kill(backend, signal.SIGCONT)
    # THEN no process is named, and the reason is given
    owner = owners[backend]
    assert (owner.kind, owner.pid) == ("unknown", None)
    assert "client closed its end" in owner.detail


@pytest.mark.postgres
def test_without_sock_diag_proc_net_unix_finds_the_socket_but_cannot_name_the_client(
    unix_dsn: str, held_in_thread: Callable[[], int]
) -> None:
    # GIVEN a held backend, and the fallback forced
    backend = held_in_thread()
    # WHEN
    owners, resolver = _owners(unix_dsn, sock_diag=False)
    # THEN the owner is not guessed; the detail names the backend's own client socket
    owner = owners[backend]
    assert (owner.kind, owner.pid) == ("unix-socket", None)
    assert "not its peer" in owner.detail and ".s.PGSQL." in owner.detail
    inode = int(owner.detail.split("socket ")[1].split()[0])
    links = {os.readlink(f"/proc/{backend}/fd/{fd}") for fd in os.listdir(f"/proc/{backend}/fd")}
    assert f"socket:[{inode}]" in links
    assert resolver.last_scan is not None and resolver.last_scan.diag_lookups == 0


@pytest.mark.postgres
def test_a_backend_pid_that_is_no_local_postgres_says_postgres_is_elsewhere(
    unix_dsn: str, held_in_thread: Callable[[], int]
) -> None:
    # GIVEN rows of a server on another host: pids that here are ours, or nobody's,
    # or a local backend's pid with another start time (a backend of another server)
    backend = held_in_thread()
    now = time.time()
    clients = [
        BackendClient(os.getpid(), now, None, -1),
        BackendClient(backend, now - 86_400, None, -1),
    ]
    # WHEN
    owners = OwnershipResolver().resolve(clients)
    # THEN
    for pid in (os.getpid(), backend):
        assert (owners[pid].kind, owners[pid].pid, owners[pid].detail) == (
            "unix-socket",
            None,
            NOT_LOCAL,
        )


@pytest.mark.postgres
def test_snapshot_json_names_the_owner_of_a_unix_socket_client(
    run_cli: Callable[..., object], unix_dsn: str, held_in_thread: Callable[[], int]
) -> None:
    # GIVEN
    backend = held_in_thread()
    # WHEN
    result = run_cli("db", "snapshot", "--dsn", unix_dsn, "--json")
    # THEN
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    data = json.loads(result.stdout)  # type: ignore[attr-defined]
    (mine,) = [b for b in data["backends"] if b["pid"] == backend]
    assert mine["client_port"] == -1
    assert mine["owner"]["pid"] == os.getpid() and mine["owner"]["kind"] == "process"
    assert mine["owner_detail"] is None


# -- PostgreSQL in a container: other PID and network namespaces ------------------------

CONTAINER = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
CONTAINED_SERVER = r"""
import json, sys
from pathlib import Path
from profiler.pg import embedded
pgdata = Path(sys.argv[1])
server = embedded.start(pgdata)
print(json.dumps({"port": server.port}), flush=True)
sys.stdin.read()
embedded.stop(pgdata, remove=False)
"""


@pytest.fixture(scope="module")
def contained_socket_dsn() -> Iterator[str]:
    """A PostgreSQL in PID and network namespaces of its own, reached through its socket file.

    Its backend pids are pids of its namespace; the socket file is shared, as
    a container's socket directory mounted on the host would be.
    """
    import shutil
    import sys
    import tempfile

    from profiler.capture.processes import stop_pid

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    pgdata = Path(tempfile.mkdtemp(prefix="profiler-contained-pg-"))  # traversable by its user
    script = f'ip link set lo up && exec {sys.executable} -c "$0" {pgdata}'
    server = subprocess.Popen(
        [*CONTAINER, "sh", "-c", script, CONTAINED_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        line = server.stdout.readline()
        assert line, "PostgreSQL did not start in its namespaces"
        port = json.loads(line)["port"]
        yield f"postgresql://postgres@/postgres?host={pgdata}&port={port}"
    finally:
        server.stdin.close()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            stop_pid(server.pid)  # --kill-child: the namespace goes with it
            server.wait(10)
        server.stdout.close()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_unix_client_of_a_contained_postgres_is_found_through_nspid_and_its_namespace(
    contained_socket_dsn: str,
) -> None:
    # GIVEN a transaction of ours held over the socket of a PostgreSQL in a container
    with psycopg.connect(contained_socket_dsn) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(row[0])
        # WHEN
        owners, resolver = _owners(contained_socket_dsn)
    # THEN its pid means another process here, yet the owner is this process
    with open(f"/proc/{backend}/comm", encoding="utf-8") as file:
        assert file.read().strip() != "postgres"  # its pid 1..n are not postgres processes here
    owner = owners[backend]
    assert (owner.kind, owner.pid) == ("process", os.getpid()), owner
    assert resolver.last_scan is not None and resolver.last_scan.diag_lookups >= 1
