"""The Diagnosis against the lab's scenarios: expected cause vs diagnosed, one row each.

Each scenario of :mod:`profiler.lab.scenarios` is brought up (2 workers, a pool
of 6 + 0 per worker, 0.1 s pool timeout, a 2 s downstream; ``memory``: its
workers in a 256 MiB memory cgroup, which needs root), recorded by a
session (task sampler, py-spy dumps, RSS, pg_stat_activity; memray too for
``memory``) while its users load it on loopback for ``--seconds``, brought
down, and diagnosed. The table
says, per scenario, the cause expected first, the cause diagnosed first, every
cause diagnosed, the critical findings, and a verdict: ``ok`` when the first
cause is the expected one (a healthy scenario: no cause and no critical
finding).

Goal: every cause diagnosed first; zero critical findings on the healthy ones.

Run: python benchmarks/diagnosis.py [--seconds 6] [--dsn postgresql://postgres@127.0.0.1/lab]
     [--only NAME ...] [--keep DIR]
Without --dsn each scenario starts its own embedded PostgreSQL (a few seconds more each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from profiler.lab.record import record_lab_session, reference_options, session_settings
from profiler.lab.scenarios import SCENARIOS, Scenario
from profiler.session import open as open_session
from profiler.session.summary import summarize


def run(scenario: Scenario, root: Path, *, seconds: float, dsn: str | None) -> dict[str, str]:
    folder = root / scenario.name
    folder.mkdir()
    options = reference_options(
        scenario.mode, dsn, scenario=scenario.name, memory_limit=scenario.memory_limit
    )
    started = time.monotonic()
    recorded = record_lab_session(
        options,
        folder,
        users=scenario.users,
        load_seconds=seconds,
        # memray where a scenario's cause is memory: its Diagnosis joins memray's peak
        settings=session_settings(seconds, cpu=False, mem=scenario.memory_limit is not None),
        mix=scenario.mix or None,
    )
    summary = summarize(open_session(folder))
    causes = [cause.cause for cause in summary.diagnosis]
    critical = sorted({f.rule for f in summary.findings if f.severity == "critical"})
    top = causes[0] if causes else "none"
    healthy = not causes and not critical
    ok = healthy if scenario.expected is None else top == scenario.expected
    return {
        "scenario": scenario.name,
        "expected": scenario.expected or "none",
        "diagnosed first": top,
        "all causes": ", ".join(causes) or "-",
        "critical findings": ", ".join(critical) or "-",
        "req/s": f"{recorded.load.rps:g}",
        "verdict": "ok" if ok else "MISS",
        "seconds": f"{time.monotonic() - started:.0f}",
    }


def table(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load per scenario")
    parser.add_argument("--dsn", default=os.environ.get("PROFILER_BENCH_DSN"))
    parser.add_argument("--only", nargs="*", default=None, help="scenario names")
    parser.add_argument("--keep", type=Path, default=None, help="keep the sessions here")
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    root = Path(tempfile.mkdtemp(prefix="diagnosis-bench-"))
    os.environ.setdefault("PROFILER_STATE_DIR", str(root / "state"))
    rows = []
    try:
        for name in names:
            rows.append(run(SCENARIOS[name], root, seconds=args.seconds, dsn=args.dsn))
            print(" | ".join(rows[-1].values()), flush=True)
    finally:
        if args.keep is not None:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(rows))
    hits = sum(row["verdict"] == "ok" for row in rows)
    print(f"\n{hits} of {len(rows)} scenarios diagnosed as expected")


if __name__ == "__main__":
    main()
