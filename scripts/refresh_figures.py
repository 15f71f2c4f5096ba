"""Run the benchmarks behind the figures in the docs, and say which pages to update.

Usage:
    .venv/bin/python scripts/refresh_figures.py --list          # what would run, and where
    .venv/bin/python scripts/refresh_figures.py                 # every benchmark (long)
    .venv/bin/python scripts/refresh_figures.py pg_sampler ownership

Each benchmark in ``benchmarks/`` (a file with a ``__main__`` block; helpers
such as ``cpu_bound_lab.py`` are not run) prints its own figures as Markdown
tables. It is run with the command line the docs quote for it (a page that
says ``python benchmarks/pg_sampler.py --backends 200 500 2000 --seconds 5``
gets exactly that), or with its defaults when no page cites it. At the end the
script lists, per benchmark, the pages whose figures came from it and whether
it succeeded: copy the new tables into those pages by hand, with the date and
the machine, as the pages already do. Nothing in ``docs/`` is edited here.

Several benchmarks start an embedded PostgreSQL and the lab, and attach py-spy
and memray: run them on an otherwise idle machine (they take minutes each).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
DOCS = ROOT / "docs"
SKIPPED_DOCS = {"findings", "hooks"}  # published reports and build code
CITATION = re.compile(r"(?:\.venv/bin/)?python3? benchmarks/(?P<name>\w+)\.py(?P<args>[^`\n]*)")


@dataclass(slots=True)
class Benchmark:
    name: str
    path: Path
    args: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)


def benchmarks() -> dict[str, Benchmark]:
    """Every runnable benchmark, with the docs pages citing it and their arguments."""
    found = {
        path.stem: Benchmark(path.stem, path)
        for path in sorted(BENCHMARKS.glob("*.py"))
        if '__name__ == "__main__"' in path.read_text(encoding="utf-8")
    }
    for page in sorted(DOCS.rglob("*.md")):
        relative = page.relative_to(DOCS)
        if relative.parts[0] in SKIPPED_DOCS:
            continue
        for match in CITATION.finditer(page.read_text(encoding="utf-8")):
            benchmark = found.get(match["name"])
            if benchmark is None:
                continue
            if str(relative) not in benchmark.pages:
                benchmark.pages.append(str(relative))
            args = shlex.split(match["args"].split("#")[0].strip().rstrip("),."))
            if args and not benchmark.args:
                benchmark.args = args
    return found


def command(benchmark: Benchmark) -> list[str]:
    return [sys.executable, str(benchmark.path.relative_to(ROOT)), *benchmark.args]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list them and their pages only")
    args = parser.parse_args()
    known = benchmarks()
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[name] for name in args.names] if args.names else list(known.values())

    if args.list:
        for benchmark in chosen:
            print(shlex.join(command(benchmark)[1:]))
            print(f"    figures in: {', '.join(benchmark.pages) or '(no docs page cites it)'}")
        return 0

    outcomes: list[tuple[Benchmark, int, float]] = []
    for benchmark in chosen:
        print(f"\n== {shlex.join(command(benchmark)[1:])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(command(benchmark), cwd=ROOT, check=False)
        outcomes.append((benchmark, done.returncode, time.monotonic() - started))

    print("\n== figures to update")
    for benchmark, code, seconds in outcomes:
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        pages = ", ".join(f"docs/{page}" for page in benchmark.pages) or "(no docs page)"
        print(f"{benchmark.name:<14} {status:<18} {seconds:7.0f} s  -> {pages}")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
