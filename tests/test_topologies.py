"""Acceptance: the join holds on every topology users run (issue 15's matrix).

{gunicorn, granian} x {TCP, Unix socket, PgBouncer session, PgBouncer transaction},
each a real lab (real servers from PyPI, Debian's pgbouncer, the embedded
PostgreSQL) recorded by a real session under a short load on loopback. In held
mode the idle-in-transaction owners are the gateway's workers (never the pooler),
connection-seconds are attributed to code, and the downstream call leads the
invoke endpoint's hold, as on direct TCP; in fresh mode no idle-in-transaction
finding fires. ``benchmarks/topologies.py`` prints the same cells, with each
share to compare with TCP's, as the table in docs/reference/db.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from profiler.errors import ToolMissingError
from profiler.lab.pgbouncer import binary as pgbouncer_binary
from profiler.lab.topologies import MATRIX_SERVERS, TOPOLOGIES, Cell, record_cell

# slow, not postgres: the SQL is the same on every server, and the matrix is long enough
# to run once (on the embedded server), not again in the second-server pass
pytestmark = pytest.mark.slow

Record = Callable[[str, str, str], Cell]


@pytest.fixture(scope="module")
def cells(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Record]:
    """Each cell recorded once per module, on first use (the TCP baselines are shared)."""
    root = tmp_path_factory.mktemp("topologies")
    recorded: dict[tuple[str, str, str], Cell] = {}

    def record(server: str, topology: str, mode: str) -> Cell:
        key = (server, topology, mode)
        if key not in recorded:
            if topology.startswith("pgbouncer"):
                try:
                    pgbouncer_binary()
                except ToolMissingError as exc:  # CI installs it (scripts/test)
                    pytest.skip(f"{exc} ({exc.hint})")
            recorded[key] = record_cell(server, topology, mode, postgres_dsn, root / "-".join(key))
        return recorded[key]

    with pytest.MonkeyPatch.context() as patch:  # module scope: before the autouse isolation
        patch.setenv("PROFILER_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield record


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("server", MATRIX_SERVERS)
def test_held_connections_are_owned_by_workers_and_attributed(
    cells: Record, server: str, topology: str
) -> None:
    # GIVEN the held lab recorded on this topology, and on direct TCP
    held = cells(server, topology, "held")
    baseline = cells(server, "tcp", "held")
    # THEN the idle transactions were seen, owned by the gateway's workers: never the pooler
    assert held.idle_in_transaction, held
    assert held.owners_are_workers, held
    assert held.unowned_idle == 0, held  # every transaction idle beyond 1 s has its worker
    if topology.startswith("pgbouncer"):
        assert held.vias == ("pgbouncer",), held
    # AND their time was attributed to code: the downstream call leads, as on direct TCP
    assert held.attributed_seconds > 0, held
    assert held.downstream_is_top and baseline.downstream_is_top, (held, baseline)
    # (Its share is compared, not asserted, within the 15 points of issue 15: direct TCP's
    # own share moved between 0.77 and 0.99 from one run to the next here, so one cell's
    # distance from one TCP run measures that noise. benchmarks/topologies.py prints them.)


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("server", MATRIX_SERVERS)
def test_the_fresh_lab_has_no_idle_in_transaction_finding(
    cells: Record, server: str, topology: str
) -> None:
    fresh = cells(server, topology, "fresh")
    assert not fresh.idle_in_transaction, fresh


def test_a_cell_reads_back_from_its_session_folder(cells: Record) -> None:
    """The figures come from the session on disk: measuring it again gives the same cell."""
    from profiler.lab.topologies import measure

    held = cells("gunicorn", "tcp", "held")
    again = measure(held.server, held.topology, held.mode, Path(held.session))
    assert again == held
