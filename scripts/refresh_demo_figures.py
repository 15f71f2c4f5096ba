"""Every before/after figure the docs quote, from one recorded run: docs/figures.json.

    .venv/bin/python scripts/refresh_demo_figures.py             # runs `profiler demo` first
    .venv/bin/python scripts/refresh_demo_figures.py --from DIR  # a demo's output folder
    .venv/bin/python scripts/refresh_demo_figures.py --check     # do the docs agree?

The README, the tutorial and the how-tos used to quote figures typed from four different
runs (0.25→65, 0→52, 1.9→20.9, 2.4→18.2 req/s). Now each quoted figure is marked where it
stands and filled in from docs/figures.json:

* in prose, ``<!-- fig:after.throughput_rps -->20.90 req/s<!-- /fig -->`` (the comments are
  invisible on GitHub and in the site);
* a whole output block, ``<!-- figures:compare -->`` (or ``load-before``, ``load-after``)
  on the line above its fence: the block is regenerated.

tests/test_figures.py fails when a marked figure differs from the file, or when a figure in
req/s is quoted outside a mark.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures.json"
PAGES = ("README.md", "docs/tutorial/profile-the-lab.md", "docs/how-to/fix-with-short-sessions.md")
INLINE = re.compile(r"<!-- fig:(?P<key>[\w.]+) -->(?P<value>.*?)<!-- /fig -->")
BLOCK = re.compile(
    r"<!-- figures:(?P<name>[\w-]+) -->\n(?P<fence>`{3,})(?P<lang>\w*)\n(?P<body>.*?)\n(?P=fence)",
    re.S,
)
DEMO_USERS, DEMO_SECONDS = 24, 10


def figures_of(demo: Path) -> dict[str, Any]:
    """The figures of a demo's two sessions: every compare measure, formatted as
    ``session compare`` prints it, and the load each ran under."""
    from profiler.session import open as open_session
    from profiler.session.compare import compare, format_value
    from profiler.session.summary import summarize

    held = summarize(open_session(demo / "sessions" / "held"))
    fresh = summarize(open_session(demo / "sessions" / "fresh"))
    comparison = compare(held, fresh)
    sides: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
    for change in comparison.changes:
        unit = change.measure.unit
        sides["before"][change.measure.name] = format_value(change.before, unit)
        sides["after"][change.measure.name] = format_value(change.after, unit)
    verdicts = {change.measure.name: change.verdict for change in comparison.changes}
    labels = {change.measure.name: change.measure.label for change in comparison.changes}
    for side, summary in (("before", held), ("after", fresh)):
        load = summary.session.load
        if load is None:
            continue
        rate = min(load.errors / load.requests, 1.0) if load.requests else 0.0
        sides[side].update(
            {
                "requests": str(load.requests),
                "errors": str(load.errors),
                "error_rate": f"{rate:.0%}",
                "rps": f"{load.rps:.2f}",
                "p50_ms": _ms(load.p50_ms),
                "p95_ms": _ms(load.p95_ms),
                "p99_ms": _ms(load.p99_ms),
                "users": str(load.users),
                "load_seconds": f"{load.ended_at - load.started_at:.0f}",
            }
        )
    return {
        "run": f"profiler demo, {sides['before'].get('users', '?')} users for "
        f"{sides['before'].get('load_seconds', '?')} s per strategy (2 workers, pool 6 + 0, "
        "2 s downstream call): held, then fresh",
        "measures": list(labels),
        "labels": labels,
        "verdicts": verdicts,
        **sides,
    }


def render_block(name: str, figures: dict[str, Any]) -> str:
    """The text of a generated output block."""
    if name == "compare":
        rows = [("measure", "before", "after", "change")]
        rows += [
            (
                figures["labels"][key],
                figures["before"][key],
                figures["after"][key],
                figures["verdicts"][key],
            )
            for key in figures["measures"]
        ]
        width = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join(
            "  ".join(
                cell.ljust(width[i]) if i == 0 else cell.rjust(width[i])
                for i, cell in enumerate(row)
            )
            for row in rows
        )
    if name in ("load-before", "load-after"):
        side = figures[name.split("-")[1]]
        return (
            f"requests {side['requests']}  errors {side['errors']}  rps {side['rps']}\n"
            f"latency ms  p50 {side['p50_ms']}  p95 {side['p95_ms']}  p99 {side['p99_ms']}"
        )
    raise KeyError(f"no generated block named {name}")


def lookup(figures: dict[str, Any], key: str) -> str:
    node: Any = figures
    for part in key.split("."):
        node = node[part]
    return str(node)


def fill(text: str, figures: dict[str, Any]) -> str:
    """``text`` with every marked figure and block set from ``figures``."""
    text = INLINE.sub(
        lambda m: f"<!-- fig:{m['key']} -->{lookup(figures, m['key'])}<!-- /fig -->", text
    )
    return BLOCK.sub(
        lambda m: (
            f"<!-- figures:{m['name']} -->\n{m['fence']}{m['lang']}\n"
            f"{render_block(m['name'], figures)}\n{m['fence']}"
        ),
        text,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="a demo's output folder")
    parser.add_argument("--check", action="store_true", help="only check the docs")
    args = parser.parse_args()
    if args.check:
        figures = json.loads(FIGURES.read_text())
        stale = [
            page
            for page in PAGES
            if fill((ROOT / page).read_text(), figures) != (ROOT / page).read_text()
        ]
        print("\n".join(f"stale: {page}" for page in stale) or "docs agree with docs/figures.json")
        return 1 if stale else 0
    with tempfile.TemporaryDirectory(prefix="profiler-figures-") as tmp:
        demo = args.source
        if demo is None:
            demo = Path(tmp) / "demo"
            subprocess.run(
                [sys.executable, "-m", "profiler", "demo", "--users", str(DEMO_USERS),
                 "--seconds", str(DEMO_SECONDS), "-o", str(demo)],
                check=True,
            )  # fmt: skip
        figures = figures_of(demo)
    FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    for page in PAGES:
        path = ROOT / page
        path.write_text(fill(path.read_text(), figures))
    print(f"wrote {FIGURES.relative_to(ROOT)} and filled {', '.join(PAGES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
