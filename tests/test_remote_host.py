"""PostgreSQL on another host, the profiler beside the client: owners resolved from the client side.

Two network namespaces joined by a veth pair stand for two hosts: addresses
10.213.N.1/30 (the server) and 10.213.N.2/30 (the client), nothing else, no
route out, so no packet leaves this machine. PostgreSQL runs in the server
namespace *and* in a PID namespace of its own, so its backend pids mean
nothing here, as on a real other host. A client process holds a transaction
idle from the client namespace, and the profiler runs there too.
Every namespace, link and process is removed in ``finally``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiler.capture.processes import stop_pid
from profiler.targets.unix_sockets import NOT_LOCAL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None,
        reason="needs root, ip (iproute2) and unshare",
    ),
]

REPO = Path(__file__).parent.parent
PROFILER = str(Path(sys.executable).parent / "profiler")

# PID 1 of the server "host": starts PostgreSQL on the given address, holds one
# transaction over the Unix socket (a local client of that host), says where it
# is, and stops the server when its stdin closes.
SERVER = r"""
import json, sys
from pathlib import Path
import psycopg
from profiler.pg import embedded
pgdata, address = Path(sys.argv[1]), sys.argv[2]
server = embedded.start(pgdata, settings={"listen_addresses": address})
with open(pgdata / "pg_hba.conf", "a") as hba:
    hba.write(f"host all all {address.rsplit('.', 1)[0]}.0/30 trust\n")
local = f"host={pgdata} port={server.port} user=postgres dbname=postgres"
with psycopg.connect(local, autocommit=True) as conn:
    conn.execute("SELECT pg_reload_conf()")
held = psycopg.connect(local, application_name="server-side-holder")
unix_backend = held.execute("SELECT pg_backend_pid()").fetchone()[0]  # opens a transaction
print(json.dumps({"port": server.port, "unix_backend": unix_backend}), flush=True)
sys.stdin.read()
held.close()
embedded.stop(pgdata, remove=False)
"""

# PID 1 of the client "host": a client holding a transaction idle, then the
# profiler beside it; prints what both saw.
CLIENT = r"""
import json, subprocess, sys
dsn, profiler, holder_code = sys.argv[1:4]
holder = subprocess.Popen([sys.executable, "-c", holder_code, dsn], stdout=subprocess.PIPE,
                          text=True)
try:
    assert holder.stdout.readline().strip() == "ready"
    backend = int(holder.stdout.readline())
    snapshot = subprocess.run([profiler, "db", "snapshot", "--json", "--dsn", dsn],
                              capture_output=True, text=True, timeout=60)
    print(json.dumps({"holder": holder.pid, "backend": backend, "rc": snapshot.returncode,
                      "stdout": snapshot.stdout, "stderr": snapshot.stderr}), flush=True)
finally:
    holder.kill()
    holder.wait()
"""

HOLDER = r"""
import sys, time, psycopg
conn = psycopg.connect(sys.argv[1], application_name="remote-holder")
pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # opens the transaction
print("ready", flush=True)
print(pid, flush=True)
time.sleep(120)
"""
ISOLATED = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


@dataclass(frozen=True)
class Hosts:
    server_ns: str
    client_ns: str
    server_addr: str
    client_addr: str
    dsn: str
    unix_backend: int


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _in(namespace: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
    server_ns, client_ns = f"prof-pg-{tag}", f"prof-app-{tag}"
    server_if, client_if = f"prs{tag}", f"prc{tag}"
    subnet = random.randrange(256)
    server_addr, client_addr = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    pgdata = Path(tempfile.mkdtemp(prefix="profiler-remote-pg-"))  # its user must traverse /tmp
    server: subprocess.Popen[str] | None = None
    try:
        _ip("netns", "add", server_ns)
        _ip("netns", "add", client_ns)
        _ip("link", "add", server_if, "type", "veth", "peer", "name", client_if)
        for link, namespace, address in (
            (server_if, server_ns, server_addr),
            (client_if, client_ns, client_addr),
        ):
            _ip("link", "set", link, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", link)
            _ip("-n", namespace, "link", "set", link, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        server = subprocess.Popen(
            _in(server_ns, *ISOLATED, sys.executable, "-c", SERVER, str(pgdata), server_addr),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line, "PostgreSQL did not start in the server namespace"
        started = json.loads(line)
        yield Hosts(
            server_ns,
            client_ns,
            server_addr,
            client_addr,
            f"postgresql://postgres@{server_addr}:{started['port']}/postgres",
            started["unix_backend"],
        )
    finally:
        if server is not None:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.close()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                stop_pid(server.pid)  # --kill-child: PostgreSQL's PID namespace goes with it
                server.wait(10)
            server.stdout.close()
        for namespace in (client_ns, server_ns):  # the veth pair goes with its namespaces
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", server_if], check=False, capture_output=True)
        shutil.rmtree(pgdata, ignore_errors=True)


@dataclass(frozen=True)
class Seen:
    holder: int  # the client's pid, as its host numbers it
    backend: int  # its backend's pid, as the server's host numbers it
    backends: dict[int, dict[str, object]]  # db snapshot --json, by backend pid


@pytest.fixture(scope="module")
def seen(hosts: Hosts) -> Seen:
    """What the profiler on the client host reports, with a client holding a transaction."""
    result = subprocess.run(
        _in(hosts.client_ns, *ISOLATED, sys.executable, "-c", CLIENT, hosts.dsn, PROFILER, HOLDER),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    said = json.loads(result.stdout.strip().splitlines()[-1])
    assert said["rc"] == 0, said["stdout"] + said["stderr"]
    snapshot = json.loads(said["stdout"])
    return Seen(said["holder"], said["backend"], {b["pid"]: b for b in snapshot["backends"]})


def test_the_owner_is_resolved_from_the_client_side(hosts: Hosts, seen: Seen) -> None:
    # GIVEN a client holding a transaction idle, PostgreSQL on another host
    # WHEN the profiler beside the client takes a snapshot
    mine = seen.backends[seen.backend]
    # THEN the backend, known by the server's pid, is owned by the client process here
    assert mine["state"] == "idle in transaction"
    assert str(mine["client_addr"]).split("/")[0] == hosts.client_addr
    assert mine["owner"] == {
        "pid": seen.holder,
        "cmdline": mine["owner"]["cmdline"],  # type: ignore[index]
        "kind": "process",
        "detail": "",
        "via": None,  # no pooler between them
    }
    assert mine["owner_detail"] is None


def test_a_unix_socket_client_of_the_remote_server_says_postgres_is_elsewhere(
    hosts: Hosts, seen: Seen
) -> None:
    # GIVEN a transaction held over the Unix socket on the server's own host
    theirs = seen.backends[hosts.unix_backend]
    # THEN no process here is named, and why
    assert theirs["client_port"] == -1 and theirs["state"] == "idle in transaction"
    assert theirs["owner"] is None
    assert theirs["owner_detail"] == NOT_LOCAL
    # AND no backend at all is claimed by a process here but the client's
    owned = {pid: b["owner"] for pid, b in seen.backends.items() if b["owner"] is not None}
    assert list(owned) == [seen.backend]
