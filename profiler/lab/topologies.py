"""The lab on each topology users run: which server, and how the gateway reaches PostgreSQL.

The join this project exists for (backend → the worker that owns its socket → the
code holding it) must hold on every topology, not only gunicorn over loopback TCP:
Granian workers, a Unix socket, PgBouncer in session and in transaction pooling.
One *cell* is the lab recorded in one topology under a bounded load, reduced to the
figures that say whether the join held: who owned the idle transactions, how many
connection-seconds were attributed to code, and the share of the held time spent
in the downstream call. The acceptance test and ``benchmarks/topologies.py`` (the
table in the docs) both record cells through :func:`record_cell`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from profiler.lab.lifecycle import LabOptions
from profiler.lab.record import (
    REFERENCE_LAB,
    record_lab_session,
    reference_options,
    session_settings,
)

Topology = Literal["tcp", "unix-socket", "pgbouncer-session", "pgbouncer-transaction"]
TOPOLOGIES: tuple[str, ...] = get_args(Topology)
MATRIX_SERVERS = ("gunicorn", "granian")

# The downstream call the held handler keeps its session across, as session show names it.
DOWNSTREAM_PATH = "invoke_tool → call_tool → AsyncClient.post"
INVOKE_ENDPOINT = "POST /tools/{tool_id}/invoke"
IDLE_SECONDS = 1.0  # session show's idle-in-transaction threshold


@dataclass(frozen=True, slots=True)
class CellLoad:
    """The lab and its load: small enough for CI, large enough to empty the pools in held mode.

    The reference lab (:data:`~profiler.lab.record.REFERENCE_LAB`: its 2 s downstream call
    and 0.1 s ``pool_timeout``) with a lighter load: 16 users for 6 s instead of 24, so a
    pool of 4 per worker, not 6, is what 16 users empty in held mode.
    """

    workers: int = REFERENCE_LAB.workers
    pool_size: int = 4
    max_overflow: int = REFERENCE_LAB.max_overflow
    pool_timeout: float = REFERENCE_LAB.pool_timeout
    downstream_latency: float = REFERENCE_LAB.downstream_latency
    users: int = 16
    seconds: float = 6.0


@dataclass(frozen=True, slots=True)
class Cell:
    """One topology's figures, from ``session show --json`` of its recorded session."""

    server: str
    topology: str
    mode: str
    workers: tuple[int, ...]  # the session's targets
    owners: tuple[int, ...]  # distinct owner PIDs of the held connections
    unowned: int  # held connections with no worker named
    unowned_idle: int  # of those, idle in transaction beyond 1 s: the ones that matter
    vias: tuple[str, ...]  # the poolers owners were found through
    idle_in_transaction: bool  # the idle-in-transaction finding fired
    attributed_seconds: float  # connection-seconds attributed to code (tasks or threads)
    downstream_share: float | None  # share of the invoke endpoint's hold in the downstream call
    throughput_rps: float | None
    session: Path

    @property
    def owners_are_workers(self) -> bool:
        return bool(self.owners) and set(self.owners) <= set(self.workers)

    @property
    def downstream_is_top(self) -> bool:
        """The downstream call is most of the invoke endpoint's attributed hold."""
        return self.downstream_share is not None and self.downstream_share > 0.5


def lab_options(server: str, topology: str, mode: str, dsn: str, load: CellLoad) -> LabOptions:
    """The lab's options for one cell; ``dsn`` is PostgreSQL's (libpq form)."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}: one of {', '.join(TOPOLOGIES)}")
    via = "pgbouncer" if topology.startswith("pgbouncer-") else None
    return reference_options(
        mode,  # type: ignore[arg-type]
        dsn,
        workers=load.workers,
        pool_size=load.pool_size,
        max_overflow=load.max_overflow,
        pool_timeout=load.pool_timeout,
        downstream_latency=load.downstream_latency,
        server=server,
        unix_socket=topology == "unix-socket",
        via=via,
        pool_mode=topology.removeprefix("pgbouncer-") if via else "session",
    )


def record_cell(
    server: str, topology: str, mode: str, dsn: str, directory: Path, load: CellLoad | None = None
) -> Cell:
    """Bring the lab up in this topology, record a session under load, bring it down."""
    load = load or CellLoad()
    options = lab_options(server, topology, mode, dsn, load)
    directory.mkdir(parents=True)
    settings = session_settings(
        load.seconds, cpu=False, mem=False, pool_capacity=load.pool_size + load.max_overflow
    )
    record_lab_session(
        options, directory, users=load.users, load_seconds=load.seconds, settings=settings
    )
    return measure(server, topology, mode, directory)


def measure(server: str, topology: str, mode: str, directory: Path) -> Cell:
    """A recorded session reduced to the cell's figures."""
    from profiler.session import open as open_session
    from profiler.session.summary import summarize

    shown = summarize(open_session(directory)).to_json()
    held = shown["held_connections"]
    owners = sorted({row["owner_pid"] for row in held if row.get("owner_pid") is not None})
    rules = {finding["rule"] for finding in shown["findings"]}
    return Cell(
        server=server,
        topology=topology,
        mode=mode,
        workers=tuple(sorted(target["pid"] for target in shown["targets"])),
        owners=tuple(owners),
        unowned=sum(row.get("owner_pid") is None for row in held),
        unowned_idle=sum(
            row.get("owner_pid") is None and (row.get("max_idle_age") or 0) >= IDLE_SECONDS
            for row in held
        ),
        vias=tuple(sorted({row["via"] for row in held if row.get("via")})),
        idle_in_transaction="idle-in-transaction" in rules,
        attributed_seconds=round(sum(shown.get("attributed_seconds", {}).values()), 3),
        downstream_share=downstream_share(shown["findings"]),
        throughput_rps=shown["metrics"].get("throughput_rps"),
        session=directory,
    )


def downstream_share(findings: list[dict[str, Any]]) -> float | None:
    """The share of the invoke endpoint's held time spent in the downstream call, or None.

    0.0 when the endpoint held connections in other code paths only."""
    for finding in findings:
        if finding["rule"] != "held-code-path":
            continue
        for endpoint in finding["evidence"].get("endpoints", []):
            if not str(endpoint.get("endpoint", "")).startswith(INVOKE_ENDPOINT):
                continue
            for path in endpoint.get("paths", []):
                if path.get("names") == DOWNSTREAM_PATH:
                    return float(path["share"])
            return 0.0
    return None
