"""Workers in their own namespaces, profiled by host PID: the container case without an engine.

The target is made with ``unshare --pid --fork --mount --net --mount-proc``: a
PID namespace (the master is PID 1 inside, its workers 2 and 3), a network
namespace (its own loopback) and a mount namespace in which a temporary
folder is bind-mounted over ``/tmp/profiler-captures`` (where captures go), so a capture
path means one file inside and another outside. (Not over all of ``/tmp``: the
interpreter running the tests may live there, as in CI's clone under /tmp.)
PostgreSQL is started *in the target's network namespace* (a sidecar, as in a
pod): the workers reach it on their loopback by TCP, we reach it through its
Unix socket, a file both sides see. Every
process started here is stopped by PID (SIGKILL to the namespace's init
ends everything in it) and the test checks nothing is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import run_profiler

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
        reason="needs root, unshare and nsenter",
    ),
]

# The master waits for a DSN on stdin (empty: no database), then forks two workers
# that burn CPU, allocate, and (with a DSN) hold a connection idle in transaction.
MASTER = r"""
import os, sys, time
dsn = sys.stdin.readline().strip()

def ns_busy_loop(conn):
    data = []
    while True:
        data.append(bytearray(4096))
        if len(data) > 500:
            data.clear()
        sum(i * i for i in range(3000))
        time.sleep(0.002)

def ns_worker():
    conn = None
    if dsn:
        import psycopg
        conn = psycopg.connect(dsn, application_name="ns-worker")
        conn.execute("SELECT 1")  # and stays idle in transaction
    ns_busy_loop(conn)

kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        ns_worker()
    kids.append(pid)
print("ready", flush=True)
for _ in kids:
    os.wait()
"""


INNER_SCRATCH = "/tmp/profiler-captures"  # where profiler writes captures inside a target


@dataclass
class Target:
    init: int  # host PID of the namespace's PID 1: the master
    workers: list[int]  # host PIDs
    inner_tmp: Path  # what the target sees as /tmp/profiler-captures
    host_dsn: str | None  # PostgreSQL in the target's network namespace, via its socket


def _start_namespace(inner_tmp: Path) -> tuple[subprocess.Popen[str], int]:
    script = (
        f"ip link set lo up && mount --bind {inner_tmp} {INNER_SCRATCH} && "
        f"exec {sys.executable} -c '{MASTER}' ns-gateway-master"
    )
    child = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--net",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            script,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = psutil.Process(child.pid).children()
        if kids and "python" in " ".join(kids[0].cmdline()):
            return child, kids[0].pid
        time.sleep(0.05)
    child.kill()
    _reap(child)
    raise AssertionError("the namespace's master did not start")


def _reap(child: subprocess.Popen[str]) -> None:
    child.wait(10)
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            pipe.close()


def _start_postgres_in(init: int, pgdata: Path) -> dict[str, object]:
    code = (
        "import json, sys; from pathlib import Path; from profiler.pg import embedded; "
        "s = embedded.start(Path(sys.argv[1])); print(json.dumps({'port': s.port, 'pid': s.pid}))"
    )
    out = subprocess.run(
        ["nsenter", "--target", str(init), "--net", "--", sys.executable, "-c", code, str(pgdata)],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    started: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return started


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    base = tmp_path_factory.mktemp("namespaces")
    inner_tmp = base / "inner-tmp"
    inner_tmp.mkdir(mode=0o1777)
    Path(INNER_SCRATCH).mkdir(exist_ok=True)  # the mount point, outside (profiler makes it too)
    pgdata = Path(tempfile.mkdtemp(prefix="profiler-ns-pg-"))  # its user must traverse /tmp
    child, init = _start_namespace(inner_tmp)
    postgres: dict[str, object] | None = None
    try:
        postgres = _start_postgres_in(init, pgdata)
        port = postgres["port"]
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(f"postgresql://postgres@127.0.0.1:{port}/postgres\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "ready"
        workers = sorted(p.pid for p in psutil.Process(init).children())
        host_dsn = f"postgresql://postgres@/postgres?host={pgdata}&port={port}"
        yield Target(init, workers, inner_tmp, host_dsn)
    finally:
        os.kill(init, signal.SIGKILL)  # PID 1 of its namespace: everything in it goes
        _reap(child)
        from profiler.pg import embedded

        if postgres is not None:
            embedded.stop(pgdata, pid=int(str(postgres["pid"])))
        elif (pgdata / "postmaster.pid").exists():  # started, then its start failed: still ours
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
            embedded.stop(pgdata, pid=pid)
        assert not psutil.pid_exists(init) or psutil.Process(init).status() == "zombie"


def _inner_pid(pid: int) -> int:
    """The PID the worker has in its namespace, straight from the kernel."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[-1])


def _json(*args: str) -> object:
    result = run_profiler(*args, "--json", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_workers_shows_host_and_namespace_pids(target: Target) -> None:
    # WHEN the master is named by its host PID
    found = _json("workers", "--pid", str(target.init))
    # THEN the master (PID 1 inside) and both workers, with both PIDs each
    assert isinstance(found, list)
    by_pid = {w["pid"]: w for w in found}
    assert set(by_pid) == {target.init, *target.workers}
    assert by_pid[target.init]["role"] == "master" and by_pid[target.init]["ns_pid"] == 1
    inner = sorted(by_pid[pid]["ns_pid"] for pid in target.workers)
    assert inner == sorted(_inner_pid(pid) for pid in target.workers)
    assert all(1 < ns < pid for ns, pid in zip(inner, target.workers, strict=True))
    for pid in target.workers:
        assert by_pid[pid]["role"] == "worker"
        assert by_pid[pid]["memray_importable"] is True  # asked in its mount namespace
        assert by_pid[pid]["pg_connections"] == 0 or by_pid[pid]["pg_connections"] >= 0


def test_cpu_dump_by_host_pid_across_the_pid_namespace(target: Target) -> None:
    # WHEN
    dumped = _json("cpu", "dump", "--pid", str(target.init))
    # THEN both workers' stacks, keyed by host PID, in the workers' own code
    assert isinstance(dumped, dict)
    assert sorted(w["pid"] for w in dumped["workers"]) == target.workers
    assert any("ns_busy_loop" in f["stack"] for f in dumped["folded"])


def test_cpu_record_by_host_pid(target: Target, tmp_path: Path) -> None:
    # WHEN
    manifest = _json("cpu", "record", "--pid", str(target.init), "-d", "2", "-o", str(tmp_path))
    # THEN a flamegraph per worker and a merged one
    assert isinstance(manifest, dict)
    assert manifest["merged"] is not None
    assert sorted(w["pid"] for w in manifest["workers"]) == target.workers
    assert all(w["samples"] > 0 for w in manifest["workers"])


def test_mem_attach_runs_memray_inside_and_fetches_the_captures(
    target: Target, tmp_path: Path
) -> None:
    # GIVEN the captures folder does not exist inside the target's filesystem
    out = tmp_path / "captures"
    # WHEN
    manifest = _json("mem", "attach", "--pid", str(target.init), "-d", "2", "-o", str(out))
    # THEN memray ran in the target's namespaces on its in-namespace PIDs, wrote into
    # its own /tmp/profiler-captures, and each capture was fetched here and reads back
    assert isinstance(manifest, dict)
    workers = {w["pid"]: w for w in manifest["workers"]}
    assert set(workers) == set(target.workers)
    for pid, worker in workers.items():
        assert worker["status"] == "done", worker
        command = worker["command"]
        assert command[0].endswith("nsenter") and str(pid) in command
        assert {"--mount", "--pid", "--net"} <= set(command)
        assert command[-1] == str(_inner_pid(pid))  # the PID memray sees, inside
        assert any(arg.startswith("/tmp/profiler-captures/memray-") for arg in command)
        capture = Path(worker["capture"])
        assert capture.parent == out.resolve() and capture.stat().st_size > 0
        stats = subprocess.run(
            [sys.executable, "-m", "memray", "stats", "--json", "-o", str(tmp_path / f"{pid}.json"),
             str(capture)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert stats.returncode == 0, stats.stderr
    assert not list(target.inner_tmp.glob("memray-*"))  # fetched, not left


def test_postgres_backends_are_mapped_to_workers_in_the_namespace(target: Target) -> None:
    # WHEN the snapshot is taken from the host, through PostgreSQL's Unix socket
    assert target.host_dsn is not None
    snapshot = _json("db", "snapshot", "--dsn", target.host_dsn)
    # THEN each worker's backend (TCP on the namespace's loopback) names its worker by host PID
    assert isinstance(snapshot, dict)
    backends = [b for b in snapshot["backends"] if b["application_name"] == "ns-worker"]
    assert len(backends) == 2
    assert sorted(b["owner"]["pid"] for b in backends) == target.workers
    assert {b["state"] for b in backends} == {"idle in transaction"}


def test_a_full_session_run_against_workers_in_namespaces(target: Target, tmp_path: Path) -> None:
    # WHEN every probe runs: PostgreSQL, stacks, py-spy, RSS, task sampler, memray
    out = tmp_path / "session"
    args = ["session", "run", "--pid", str(target.init), "--dsn", str(target.host_dsn)]
    result = _json(*args, "-d", "4", "--mem", "-o", str(out))
    # THEN every probe worked, and the manifest has both PIDs of each worker
    assert isinstance(result, dict)
    statuses = {name: probe["status"] for name, probe in result["probes"].items()}
    assert all(status == "ok" for status in statuses.values()), result["probes"]
    assert {"mem", "tasks", "cpu"} <= set(statuses)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted((t["pid"], t["ns_pid"]) for t in manifest["targets"]) == sorted(
        (pid, _inner_pid(pid)) for pid in target.workers
    )
    assert len(list((out / "mem").glob("memray-*.bin"))) == 2
    task_files = sorted((out / "tasks").glob("tasks-*.jsonl"))
    assert len(task_files) == 2 and not any(p.is_symlink() for p in task_files)
    held = _json("session", "show", str(out))
    assert isinstance(held, dict)
    owners = {
        h["owner_pid"] for h in held["held_connections"] if h["application_name"] == "ns-worker"
    }
    assert owners == set(target.workers)  # the held connections name the workers by host PID


def test_nothing_is_left_running_after_the_namespace_is_killed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # GIVEN a namespace of its own (not the module's)
    inner = tmp_path_factory.mktemp("ns-leftover")
    child, init = _start_namespace(inner)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "ready"
    workers = [p.pid for p in psutil.Process(init).children()]
    # WHEN its init is killed
    os.kill(init, signal.SIGKILL)
    _reap(child)
    # THEN no process of it is left
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in [init, *workers]):
        time.sleep(0.05)
    assert not any(psutil.pid_exists(p) for p in [init, *workers])
