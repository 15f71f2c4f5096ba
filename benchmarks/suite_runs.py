"""The whole CI command, several times in a row, each on a fresh clone: is the suite stable?

Each run clones this repository at ``--commit`` into a folder of its own, puts
``../shared`` beside it (a link to this checkout's), and runs ``CI=true bash .ci/run``
there, as CI does: its own venv, every test, the second PostgreSQL pass. Runs go one
after another, never at once, so that each sees the machine CI has. A line per run says
its exit code, its seconds and pytest's summary lines; its whole output stays in
``--work``/runN.log. The clone's venv is removed after its run (a few hundred MB each).

Goal: every run passes (issue 18: at least 5 in a row on the 2-core machine).

Run: python benchmarks/suite_runs.py [--commit HEAD] [--runs 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST_SUMMARY = re.compile(r"^=+ (.*(?:passed|failed|error).* in [\d.]+s.*?) =+$", re.MULTILINE)


def run_once(commit: str, folder: Path, log: Path) -> tuple[int, float, list[str]]:
    """One fresh clone at ``commit``, the CI command in it: exit code, seconds, summaries."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    clone = folder / "main"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
    (folder / "shared").symlink_to(ROOT.parent / "shared")
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(
            ["bash", ".ci/run"],
            check=False,
            cwd=clone,
            env={**os.environ, "CI": "true"},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        ).returncode
    seconds = time.monotonic() - started
    shutil.rmtree(clone / ".venv", ignore_errors=True)
    return code, seconds, PYTEST_SUMMARY.findall(log.read_text(errors="replace"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="HEAD", help="what to check out (default: HEAD)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="where clones and logs go (default: a temp dir)")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    work = args.work or Path(tempfile.mkdtemp(prefix="suite-runs-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"commit {commit}, {args.runs} runs, logs in {work}", flush=True)
    failed = 0
    for number in range(1, args.runs + 1):
        log = work / f"run{number}.log"
        code, seconds, summaries = run_once(commit, work / f"run{number}", log)
        failed += code != 0
        print(f"run {number}: exit {code}, {seconds:.0f} s; " + " | ".join(summaries), flush=True)
    print(f"{args.runs - failed} of {args.runs} runs passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
