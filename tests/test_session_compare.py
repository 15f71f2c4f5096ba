"""`session compare` on recorded sessions: how a measure that a fix removes altogether compares.

The recorded held and fresh lab sessions (``tests/data``) are real captures; the
"clean" variant is the fresh one with every idle-in-transaction row turned
into a plain idle one, which is what a fresh run that happened never to catch
a transaction between its statements looks like.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from profiler.session import open as open_session
from profiler.session.compare import MEASURES, Measure, compare, verdict
from profiler.session.summary import Summary, summarize

DATA = Path(__file__).parent / "data"
STATE, XACT_START = 15, 10  # columns of an activity row, as the header lists them


def without_idle_transactions(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / "activity.parquet").unlink()
    lines = (target / "activity.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["columns"][STATE] == "state" and header["columns"][XACT_START] == "xact_start"
    rewritten = [lines[0]]
    for line in lines[1:]:
        record = json.loads(line)
        for row in record.get("rows", []):
            if row[STATE] == "idle in transaction":
                row[STATE], row[XACT_START] = "idle", None
        rewritten.append(json.dumps(record))
    (target / "activity.jsonl").write_text("\n".join(rewritten) + "\n")
    return target


def by_name(name: str) -> Measure:
    return next(measure for measure in MEASURES if measure.name == name)


@pytest.fixture(scope="module")
def held() -> Summary:
    return summarize(open_session(DATA / "session"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Summary:
    folder = tmp_path_factory.mktemp("clean") / "session"
    return summarize(open_session(without_idle_transactions(DATA / "session-fresh", folder)))


def test_a_sampled_session_with_no_idle_transaction_has_ages_of_zero(clean: Summary) -> None:
    # GIVEN a session that sampled pg_stat_activity and never saw idle in transaction
    metrics = clean.metrics
    # THEN its idle ages were measured, and are 0 s, not unknown
    assert (metrics.idle_age_p50, metrics.idle_age_p95, metrics.idle_age_max) == (0.0, 0.0, 0.0)
    assert (metrics.idle_in_transaction, metrics.idle_in_transaction_peak) == (0, 0)


def test_a_fix_that_removes_every_idle_transaction_is_better(held: Summary, clean: Summary) -> None:
    # WHEN the held session is compared with one that has no idle transaction left
    changes = {c.measure.name: c for c in compare(held, clean, ["idle-in-transaction"]).changes}
    # THEN every idle measure is better, and the gate passes
    for name in ("idle_in_transaction", "idle_in_transaction_peak", "idle_age_max"):
        assert changes[name].verdict == "better", changes[name]
    assert compare(held, clean, ["idle-in-transaction"]).failed_on == []
    # AND the other way round the gate fails
    assert compare(clean, held, ["idle-in-transaction"]).failed_on == ["idle-in-transaction"]


def test_a_session_without_activity_leaves_the_ages_unknown(tmp_path: Path) -> None:
    # GIVEN a session whose PostgreSQL probe recorded nothing
    folder = shutil.copytree(DATA / "session-fresh", tmp_path / "session")
    (folder / "activity.parquet").unlink()
    (folder / "activity.jsonl").unlink()
    metrics = summarize(open_session(folder)).metrics
    # THEN the ages are unknown, and a comparison on them says so
    assert metrics.idle_age_max is None
    assert verdict(by_name("idle_age_max"), 1.0, metrics.idle_age_max) == "n/a"
