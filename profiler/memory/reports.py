"""memray's own reports of a capture, written beside it under predictable names.

The HTML and text reports come from memray's CLI run on our interpreter
(``python -m memray flamegraph -o OUT CAPTURE``): its stable interface, and a
separate process keeps memray's progress bars and warnings off our stdout.
They run in parallel, one per core. memray's ``tree`` is an interactive
terminal app, so ``<stem>.tree.txt`` is the same view (the call tree at the
peak, biggest 200 stacks) rendered here from the capture's summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from profiler import units
from profiler.errors import InputError, UsageError
from profiler.memory.reader import CaptureSummary
from profiler.memory.stacks import Frame, StackUsage
from profiler.outputs import refuse_to_clobber

KINDS = ("flamegraph", "table", "tree", "stats", "summary")
"""What ``--kind`` accepts besides ``all`` and ``none``."""

SUFFIXES = {
    "flamegraph": ".flamegraph.html",
    "flamegraph-temporal": ".flamegraph-temporal.html",
    "flamegraph-leaks": ".flamegraph-leaks.html",
    "table": ".table.html",
    "tree": ".tree.txt",
    "stats": ".stats.txt",
    "stats-json": ".stats.json",
    "summary": ".summary.txt",
}
"""Report name -> what follows the capture's stem in its file name."""

TREE_STACKS = 200
"""Stacks drawn in ``tree.txt``, the biggest first (memray tree's default)."""
STATS_LOCATIONS = 10
SUMMARY_ROWS = 100
REPORT_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class PlannedReport:
    """One report file to write from one capture."""

    capture: Path
    name: str
    """A key of ``SUFFIXES``: flamegraph, table, tree, stats, stats-json, ..."""
    path: Path


@dataclass(frozen=True, slots=True)
class ReportResult:
    """A report written (``error`` None) or not, and how long it took."""

    report: PlannedReport
    error: str | None
    seconds: float


def parse_kinds(values: Iterable[str]) -> tuple[str, ...]:
    """``--kind`` values (repeatable, comma-separated too) as report kinds in ``KINDS`` order.

    >>> parse_kinds(["table,flamegraph"])
    ('flamegraph', 'table')
    >>> parse_kinds(["all"]) == KINDS
    True
    """
    wanted: set[str] = set()
    for value in values:
        for item in filter(None, (part.strip().lower() for part in value.split(","))):
            if item == "all":
                wanted.update(KINDS)
            elif item == "none":
                continue
            elif item in KINDS:
                wanted.add(item)
            else:
                raise UsageError(
                    f"unknown report kind {item!r}",
                    hint=f"--kind takes {', '.join(KINDS)}, all or none",
                )
    return tuple(kind for kind in KINDS if kind in wanted)


def report_names(kinds: Sequence[str], *, temporal: bool, leaks: bool) -> tuple[str, ...]:
    """The report files ``kinds`` and the flags ask for, in a stable order."""
    names: list[str] = []
    for kind in kinds:
        names.extend(("stats", "stats-json") if kind == "stats" else (kind,))
    if temporal:
        names.append("flamegraph-temporal")
    if leaks:
        names.append("flamegraph-leaks")
    return tuple(names)


def stem(capture: Path) -> str:
    """The capture's name without ``.bin``: ``memray-4242.bin`` -> ``memray-4242``."""
    return capture.stem if capture.suffix == ".bin" else capture.name


def plan(
    captures: Sequence[Path], names: Sequence[str], directory: Path | None
) -> list[PlannedReport]:
    """Where each report goes: ``DIR/<stem><suffix>``, beside the capture without ``DIR``.

    Two captures that would write the same file are a usage error.
    """
    planned: list[PlannedReport] = []
    owners: dict[Path, Path] = {}
    for capture in captures:
        folder = directory if directory is not None else capture.parent
        for name in names:
            path = folder / f"{stem(capture)}{SUFFIXES[name]}"
            other = owners.setdefault(path.resolve(), capture)
            if other != capture:
                raise UsageError(
                    f"{other} and {capture} would both write {path}",
                    hint="rename one capture, or report them one at a time with different -o DIR",
                )
            planned.append(PlannedReport(capture, name, path))
    return planned


def prepare(
    captures: Sequence[Path], names: Sequence[str], directory: Path | None, *, force: bool
) -> list[PlannedReport]:
    """Check the captures are files and no report would silently replace a file; plan.

    ``InputError`` (exit 7) names a missing capture; ``UsageError`` (exit 2) the first
    existing report without ``force``. Nothing is read or written yet.
    """
    for capture in captures:
        if not capture.is_file():
            what = "not a file" if capture.exists() else "no such file"
            raise InputError(f"{capture}: {what}", hint="pass memray capture files (.bin)")
    planned = plan(captures, names, directory)
    refuse_to_clobber((report.path for report in planned), force=force)
    return planned


def unsupported(name: str, summary: CaptureSummary) -> str | None:
    """Why memray cannot write this report for this capture, or None when it can."""
    if summary.aggregated and name in ("stats", "stats-json"):
        return "memray stats needs every allocation; an aggregated capture does not keep them"
    if summary.aggregated and name == "flamegraph-temporal":
        return "memray cannot draw a temporal flamegraph from an aggregated capture"
    return None


def memray_argv(report: PlannedReport, *, offline: bool) -> list[str]:
    """The memray command writing ``report`` (for stats and summary: to its stdout)."""
    memray = [sys.executable, "-m", "memray"]
    capture = str(report.capture)
    web = ["--no-web"] if offline else []
    output = ["-f", "-o", str(report.path)]
    commands = {
        "flamegraph": ["flamegraph", *output, *web, capture],
        "flamegraph-temporal": ["flamegraph", "--temporal", *output, *web, capture],
        "flamegraph-leaks": ["flamegraph", "--leaks", *output, *web, capture],
        "table": ["table", *output, *web, capture],
        "stats": ["stats", "-n", str(STATS_LOCATIONS), capture],
        "stats-json": ["stats", "--json", "-n", str(STATS_LOCATIONS), *output, capture],
        "summary": ["summary", "--max-rows", str(SUMMARY_ROWS), capture],
    }
    return memray + commands[report.name]


WRITES_STDOUT = frozenset({"stats", "summary"})
"""memray reports that print instead of writing a file; their stdout is the report."""


def write_reports(
    reports: Sequence[PlannedReport],
    summaries: dict[Path, CaptureSummary],
    *,
    offline: bool = False,
    jobs: int | None = None,
) -> list[ReportResult]:
    """Write every report, memray's in parallel (``jobs`` at once, default one per core).

    A report that fails is a result with its ``error`` (memray's last line), not
    an exception: the others are still written.
    """
    results: dict[PlannedReport, ReportResult] = {}
    from_memray = [report for report in reports if report.name != "tree"]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        running = {
            report: pool.submit(_run_memray, report, offline=offline) for report in from_memray
        }
        for report in reports:
            if report.name == "tree":
                results[report] = _write_tree(report, summaries[report.capture])
        for report, future in running.items():
            results[report] = future.result()
    return [results[report] for report in reports]


def _run_memray(report: PlannedReport, *, offline: bool) -> ReportResult:
    started = time.monotonic()
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    env.pop("FORCE_COLOR", None)
    try:
        completed = subprocess.run(
            memray_argv(report, offline=offline),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=REPORT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ReportResult(report, f"memray did not run: {exc}", time.monotonic() - started)
    error = None
    if completed.returncode != 0:
        lines = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
        error = lines[-1] if lines else f"memray exited with code {completed.returncode}"
    elif report.name in WRITES_STDOUT:
        try:
            report.path.write_text(completed.stdout.strip("\n") + "\n", encoding="utf-8")
        except OSError as exc:
            error = f"cannot write {report.path}: {exc.strerror}"
    return ReportResult(report, error, time.monotonic() - started)


def _write_tree(report: PlannedReport, summary: CaptureSummary) -> ReportResult:
    started = time.monotonic()
    try:
        with report.path.open("w", encoding="utf-8") as file:
            render_tree(summary, file)
    except OSError as exc:
        return ReportResult(report, f"cannot write {report.path}: {exc.strerror}", 0.0)
    return ReportResult(report, None, time.monotonic() - started)


class _Node:
    __slots__ = ("allocations", "children", "size")

    def __init__(self) -> None:
        self.size = 0
        self.allocations = 0
        self.children: dict[Frame, _Node] = {}


def render_tree(summary: CaptureSummary, out: TextIO, *, stacks: int = TREE_STACKS) -> None:
    """The call tree of the memory live at the peak, outermost frame first, as text.

    What ``memray tree`` shows interactively: the ``stacks`` biggest stacks, each
    node with the bytes and allocations of everything below it, biggest first.
    Deterministic: same capture, same bytes.
    """
    shown, elided = summary.peak_stacks[:stacks], summary.peak_stacks[stacks:]
    root = _Node()
    for usage in shown:
        _add(root, usage)
    peak = summary.peak_memory_bytes
    out.write(
        f"Allocations live at the peak of {summary.path.name} (pid {summary.pid}): "
        f"{units.size(peak)}, {_allocations(root.allocations)}\n"
    )
    if elided:
        hidden = sum(usage.bytes for usage in elided)
        out.write(
            f"{len(elided)} smaller stacks not shown ({units.size(hidden)}); "
            f"the biggest {stacks} are\n"
        )
    out.write("\n")
    _draw(root, out, prefix="", total=max(peak, root.size, 1))


def _add(root: _Node, usage: StackUsage) -> None:
    node = root
    node.size += usage.bytes
    node.allocations += usage.allocations
    for frame in reversed(usage.frames):
        node = node.children.setdefault(frame, _Node())
        node.size += usage.bytes
        node.allocations += usage.allocations


def _draw(root: _Node, out: TextIO, *, prefix: str, total: int) -> None:
    """Depth first without recursion: a captured stack can be as deep as our recursion limit.

    ``pending`` holds lines to write (node None) and subtrees to expand (with their indent).
    """
    pending: list[tuple[str, _Node | None]] = [(prefix, root)]
    while pending:
        text, node = pending.pop()
        if node is None:
            out.write(text)
            continue
        ordered = sorted(
            node.children.items(),
            key=lambda item: (-item[1].size, item[0].file, item[0].line, item[0].function),
        )
        for index in range(len(ordered) - 1, -1, -1):  # reversed: the first child pops first
            frame, child = ordered[index]
            last = index == len(ordered) - 1
            pending.append((text + ("    " if last else "│   "), child))
            pending.append(
                (
                    f"{text}{'└── ' if last else '├── '}{units.size(child.size)} "
                    f"({units.percent(child.size / total, 1)}, {_allocations(child.allocations)}) "
                    f"{frame.function} {frame.file}:{frame.line}\n",
                    None,
                )
            )


def _allocations(count: int) -> str:
    return f"{count:,} allocation{'s' * (count != 1)}"
