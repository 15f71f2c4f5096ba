"""How long mapping backends to their client processes takes: cold, warm, and with churn.

Opens N connections from this process, then times ``OwnershipResolver.resolve``
on every row of ``pg_stat_activity``, as the sampler calls it:

* cold:  a new resolver, so a full /proc scan for every backend;
* warm:  the same backends again, answered from the cache;
* churn: 10% of the connections replaced by new ones, so a scan for those only.

Wall time (``perf_counter``) and CPU time (``process_time``), median over repeats.

With ``--via pgbouncer`` the N connections go through a real PgBouncer (session
or transaction pooling), each holding a transaction open, and the timed call is
what the sampler does per snapshot behind a pooler: the warm resolve, then
``SHOW SERVERS`` + ``SHOW CLIENTS`` on the admin console and the join to the
(cached) owners of the client sockets. Links change per transaction in
transaction pooling, so the console is read every snapshot in both modes; the
CPU PgBouncer itself spends answering is printed beside ours.

    python benchmarks/ownership.py --connections 200
    python benchmarks/ownership.py --unix-socket     # clients on PostgreSQL's Unix socket
    python benchmarks/ownership.py --dsn postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/ownership.py --via pgbouncer --pool-mode transaction

Without ``--dsn`` a throwaway embedded server is started, sized for N, and
removed at the end; with ``--dsn`` nothing is changed on the server, and if it
has fewer free slots than N the benchmark says how many it could open.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import make_conninfo

from profiler.model import Owner
from profiler.pg import embedded
from profiler.targets.backend_clients import BackendClient
from profiler.targets.ownership import OwnershipResolver

APPLICATION = "ownership-benchmark"
ROWS = "SELECT pid, backend_start, client_addr::text, client_port FROM pg_stat_activity"
USED = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"

Connection = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Timing:
    wall_ms: float
    cpu_ms: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500, help="backends to open")
    parser.add_argument("--dsn", help="an existing server (default: an embedded one)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    parser.add_argument("--churn", type=float, default=0.10, help="share of new backends")
    parser.add_argument(
        "--no-sock-diag",
        dest="sock_diag",
        action="store_false",
        help="find sockets through the /proc/net/tcp tables only",
    )
    parser.add_argument(
        "--unix-socket",
        action="store_true",
        help="connect through the server's Unix socket (its first unix_socket_directories)",
    )
    parser.add_argument("--via", choices=["pgbouncer"], help="connect through a real PgBouncer")
    parser.add_argument("--pool-mode", choices=["session", "transaction"], default="session")
    args = parser.parse_args()
    if args.unix_socket and not args.sock_diag:
        parser.error("--no-sock-diag with --unix-socket: /proc/net/unix names no peer to time")
    if args.via:
        if args.unix_socket:
            parser.error("--via pgbouncer with --unix-socket: the benchmark's clients use TCP")
        return _via_pgbouncer(args)

    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(_embedded_server(args.connections))
        if args.unix_socket:
            dsn = _through_socket(dsn)
        conns: list[Connection] = []
        stack.callback(_close_all, conns)
        opened, limit = _open(dsn, args.connections, conns)
        if opened < args.connections:
            print(f"-- opened {opened} of {args.connections} connections: {limit}")
        with psycopg.connect(dsn, autocommit=True) as monitor:
            found = _one(monitor, "SELECT inet_server_port()")
            port = None if found is None else int(str(found))
            print(
                f"-- {opened} connections from pid {os.getpid()} to "
                f"{'the Unix socket' if port is None else f'port {port}'}; "
                f"{len(_clients(monitor))} rows in pg_stat_activity; "
                f"{len([p for p in os.listdir('/proc') if p.isdigit()])} processes on this host"
            )
            repeats, sock_diag = args.repeats, args.sock_diag
            tables = "/proc/net/unix" if port is None else "/proc/net/tcp*"
            print(f"-- sockets found through {'sock_diag' if sock_diag else tables}")
            _report("cold (new resolver)", *_cold(monitor, port, conns, repeats, sock_diag))
            _report("warm (all cached)", *_warm(monitor, port, conns, repeats, sock_diag))
            churn = _churn(dsn, monitor, port, conns, repeats, args.churn, sock_diag)
            _report(f"churn ({args.churn:.0%} new backends)", *churn)
    return 0


# -- the three cases --------------------------------------------------------------


def _cold(
    monitor: Connection, port: int | None, conns: list[Connection], repeats: int, sock_diag: bool
) -> tuple[list[Timing], str]:
    clients = _clients(monitor)
    timings = []
    resolver = OwnershipResolver(server_port=port, sock_diag=sock_diag)
    for _ in range(repeats):
        resolver = OwnershipResolver(server_port=port, sock_diag=sock_diag)
        timings.append(_timed(_resolving(resolver, clients, conns)))
    return timings, _scanned(resolver)


def _warm(
    monitor: Connection, port: int | None, conns: list[Connection], repeats: int, sock_diag: bool
) -> tuple[list[Timing], str]:
    clients = _clients(monitor)
    resolver = OwnershipResolver(server_port=port, sock_diag=sock_diag)
    _check(resolver.resolve(clients), conns)
    scans = resolver.scans
    timings = [_timed(lambda: resolver.resolve(clients)) for _ in range(repeats)]
    assert resolver.scans == scans, "a warm resolve scanned /proc"
    return timings, f"no /proc scan, {len(clients)} cache hits per call"


def _churn(
    dsn: str,
    monitor: Connection,
    port: int | None,
    conns: list[Connection],
    repeats: int,
    share: float,
    sock_diag: bool,
) -> tuple[list[Timing], str]:
    resolver = OwnershipResolver(server_port=port, sock_diag=sock_diag)
    resolver.resolve(_clients(monitor))
    replaced = max(1, round(len(conns) * share))
    timings = []
    for _ in range(repeats):
        for conn in conns[:replaced]:
            conn.close()
        del conns[:replaced]
        for _ in range(replaced):
            conns.append(_connect(dsn))
        clients = _clients(monitor)
        timings.append(_timed(_resolving(resolver, clients, conns)))
    return timings, _scanned(resolver)


# -- through PgBouncer ----------------------------------------------------------------


def _via_pgbouncer(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import psutil

    from profiler.lab import pgbouncer
    from profiler.pg.pgbouncer import PoolerLens

    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(_embedded_server(args.connections))
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pooler = pgbouncer.start(
            dsn, directory, pool_mode=args.pool_mode, pool_size=args.connections + 10
        )
        stack.callback(pgbouncer.stop, pooler.pid)
        through = pgbouncer.through(dsn, pooler.port)
        conns: list[Connection] = []
        stack.callback(_close_all, conns)
        backends: list[int] = []
        for _ in range(args.connections):
            conn = psycopg.connect(through, application_name=APPLICATION, prepare_threshold=None)
            conns.append(conn)  # not autocommit: the transaction stays open, the link stays
            backends.append(int(str(_one(conn, "SELECT pg_backend_pid()"))))
        with psycopg.connect(dsn, autocommit=True) as monitor:
            port = int(str(_one(monitor, "SELECT inet_server_port()")))
            clients = _clients(monitor)
            resolver = OwnershipResolver(server_port=port, sock_diag=args.sock_diag)
            lens = PoolerLens(dsn, pooler.admin_dsn, warn=print)
            stack.callback(lens.close)

            answers: list[dict[int, Owner]] = []

            def snapshot() -> None:
                answers.append(lens.apply(clients, resolver.resolve(clients)))

            def check(owners: dict[int, Owner]) -> None:  # outside the timing: not our cost
                me = os.getpid()
                wrong = [
                    owners[b]
                    for b in backends
                    if (owners[b].pid, owners[b].via) != (me, "pgbouncer")
                ]
                assert not wrong, f"{len(wrong)} not seen through, e.g. {wrong[:2]}"

            cold = _timed(snapshot)
            bouncer = psutil.Process(pooler.pid)
            before = sum(bouncer.cpu_times()[:2])
            timings = [_timed(snapshot) for _ in range(args.repeats)]
            spent = 1000 * (sum(bouncer.cpu_times()[:2]) - before) / args.repeats
            for owners in answers:
                check(owners)
            plain = [_timed(lambda: resolver.resolve(clients)) for _ in range(args.repeats)]
            print(
                f"-- {len(conns)} clients through PgBouncer {pooler.pid} ({args.pool_mode} "
                f"pooling) from pid {os.getpid()}, each idle in transaction; "
                f"{len(clients)} rows in pg_stat_activity"
            )
            _report("cold (new resolvers)", [cold], "first /proc scans of backends and clients")
            _report(
                "warm through pgbouncer",
                timings,
                f"SHOW SERVERS + SHOW CLIENTS each snapshot; pgbouncer's own CPU "
                f"{spent:.3f} ms per snapshot (psutil, 10 ms ticks)",
            )
            _report("  of which warm resolve", plain, "the same snapshot without a pooler")
            _report(
                "  of which console read",
                [Timing(1000 * lens.last_read_seconds, float("nan"))],
                "wall of the last SHOW SERVERS + SHOW CLIENTS",
            )
    return 0


# -- helpers ------------------------------------------------------------------------


@contextmanager
def _embedded_server(connections: int) -> Iterator[str]:
    # Room for our connections, the monitor and the churn's overlap.
    settings = {"max_connections": str(max(300, connections + 50))}
    print(f"-- starting an embedded PostgreSQL (max_connections={settings['max_connections']})")
    try:
        server = embedded.start(settings=settings)  # type: ignore[call-arg, unused-ignore]
    except TypeError:  # an embedded.start() without settings: its fixed 300 slots
        server = embedded.start()
    try:
        yield server.dsn
    finally:
        embedded.stop(server.pgdata, pid=server.pid)


def _through_socket(dsn: str) -> str:
    """The same server through its Unix socket directory."""
    with psycopg.connect(dsn, autocommit=True) as probe:
        directories = str(_one(probe, "SHOW unix_socket_directories"))
        port = probe.info.port
    directory = directories.split(",", maxsplit=1)[0].strip()
    return make_conninfo(dsn, host=directory, port=port)


def _resolving(
    resolver: OwnershipResolver, clients: list[BackendClient], conns: list[Connection]
) -> Callable[[], None]:
    return lambda: _check(resolver.resolve(clients), conns)


def _close_all(conns: list[Connection]) -> None:
    for conn in conns:
        conn.close()


def _connect(dsn: str) -> Connection:
    return psycopg.connect(dsn, autocommit=True, application_name=APPLICATION)


def _open(dsn: str, wanted: int, conns: list[Connection]) -> tuple[int, str]:
    """Open up to ``wanted`` connections; keep two slots free for the monitor and churn."""
    with psycopg.connect(dsn, autocommit=True) as probe:
        limit = int(str(_one(probe, "SHOW max_connections")))
        used = int(str(_one(probe, USED)))
    room = max(0, limit - used - 2)
    why = f"the server's max_connections is {limit}, {used} in use"
    for _ in range(min(wanted, room)):
        try:
            conns.append(_connect(dsn))
        except psycopg.OperationalError as exc:
            why = str(exc).strip().splitlines()[0]
            break
    return len(conns), why


def _clients(monitor: Connection) -> list[BackendClient]:
    return [
        BackendClient(int(str(pid)), start, addr, port)  # type: ignore[arg-type]
        for pid, start, addr, port in monitor.execute(ROWS).fetchall()
    ]


def _one(conn: Connection, sql: str) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _check(owners: dict[int, Owner], conns: list[Connection]) -> None:
    """Every connection we opened must be ours, or the timing measured a wrong answer."""
    me = os.getpid()
    wrong = [
        (conn.info.backend_pid, owners.get(conn.info.backend_pid))
        for conn in conns
        if owners.get(conn.info.backend_pid, Owner("unknown")).pid != me
    ]
    assert not wrong, f"{len(wrong)} backends not resolved to this process, e.g. {wrong[:3]}"


def _timed(work: Callable[[], object]) -> Timing:
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return Timing(1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu))


def _scanned(resolver: OwnershipResolver) -> str:
    scan = resolver.last_scan
    if scan is None:
        return "no /proc scan"
    return (
        f"scan of {scan.backends} backends: {scan.processes} processes, "
        f"{scan.fd_dirs_read} fd dirs, {scan.fd_links_read} fd links, "
        f"tables {', '.join(table for _, table in scan.tables_read) or 'none'}"
    )


def _report(case: str, timings: list[Timing], note: str) -> None:
    wall = statistics.median(t.wall_ms for t in timings)
    cpu = statistics.median(t.cpu_ms for t in timings)
    fastest = min(t.wall_ms for t in timings)
    print(
        f"{case:<26} wall {wall:7.3f} ms  cpu {cpu:7.3f} ms  "
        f"(median of {len(timings)}, min {fastest:.3f})  {note}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
