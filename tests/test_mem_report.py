"""``profiler mem report``: real memray captures of real Python processes, the real CLI.

Each capture comes from its own Python process tracked by ``memray.Tracker``,
allocating known amounts in known functions: ``mem_report_marker_big`` holds
BIG MiB while ``mem_report_marker_small`` (called from it) holds 5 MiB, so the
peak is BIG + 5 MiB; ``mem_report_marker_churn`` then allocates and frees 30
MiB one at a time, which shows in the totals and not at the peak.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliResult

MiB = 2**20

CAPTURE_SCRIPT = textwrap.dedent(
    """
    import os
    import signal
    import sys

    import memray

    path, mode, big_mib = sys.argv[1], sys.argv[2], int(sys.argv[3])


    def mem_report_marker_small():
        return bytearray(5 * 2**20)


    def mem_report_marker_big():
        held = bytearray(big_mib * 2**20)
        small = mem_report_marker_small()
        return len(held) + len(small)


    def mem_report_marker_churn():
        for _ in range(30):
            chunk = bytearray(2**20)
            del chunk


    def mem_report_marker_many():
        ring = [None] * 1000  # many records, little memory: each slot is replaced in turn
        for i in range(20_000):
            ring[i % 1000] = bytearray(600 + (i * 7919) % 3000)


    def main():
        mem_report_marker_big()
        if mode == "killed":  # as the OOM killer would: memray never closes the capture
            os.kill(os.getpid(), signal.SIGKILL)
        mem_report_marker_churn()
        if mode == "many":
            mem_report_marker_many()


    if mode == "aggregated":
        tracker = memray.Tracker(path, file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS)
    else:
        tracker = memray.Tracker(path)
    with tracker:
        main()
    """
)

# name: (mode, BIG MiB)
CAPTURES = {
    "big": ("all", 50),
    "small": ("all", 20),
    "aggregated": ("aggregated", 50),
    "killed": ("killed", 50),
    "many": ("many", 10),
}


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every capture of ``CAPTURES``, made by processes running side by side."""
    folder = tmp_path_factory.mktemp("captures")
    script = folder / "capture_script.py"
    script.write_text(CAPTURE_SCRIPT)
    running = {
        name: subprocess.Popen(
            [sys.executable, str(script), str(folder / f"{name}.bin"), mode, str(big)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (mode, big) in CAPTURES.items()
    }
    for name, process in running.items():
        _, stderr = process.communicate(timeout=60)
        expected = -signal.SIGKILL if name == "killed" else 0
        assert process.returncode == expected, stderr
    return {name: folder / f"{name}.bin" for name in CAPTURES}


@pytest.fixture
def cut_in_half(tmp_path: Path) -> Callable[[Path], Path]:
    """A copy of a capture with its second half gone, as ``truncate -s 50%`` leaves it."""

    def cut(capture: Path) -> Path:
        data = capture.read_bytes()
        half = tmp_path / f"{capture.stem}-half.bin"
        half.write_bytes(data[: len(data) // 2])
        return half

    return cut


def near(value: float, expected: float, tolerance: float = 0.10) -> bool:
    return abs(value - expected) <= tolerance * expected


def report_json(result: CliResult) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)  # stdout is nothing but the JSON
    return data


def assert_one_error_line(result: CliResult, code: int, *names: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for name in names:
        assert name in errors[0], result.output
    assert any(line.startswith("next:") for line in result.stderr.splitlines()), result.output
    assert result.stdout == "", result.output


# --- the library: what a capture says --------------------------------------------------------


def test_summary_finds_the_sites_at_the_peak_and_by_total(captures: dict[str, Path]) -> None:
    # GIVEN a capture of a process holding 50 + 5 MiB at its peak, then churning 30 MiB
    from profiler.memory.reader import read_capture

    # WHEN it is read
    summary = read_capture(captures["big"])

    # THEN the peak is the 55 MiB held together, biggest site first, with its callers
    assert near(summary.peak_memory_bytes, 55 * MiB), summary.peak_memory_bytes
    top, second = summary.by_peak[:2]
    assert top.frame.function == "mem_report_marker_big"
    assert near(top.bytes, 50 * MiB), top
    assert [frame.function for frame in top.stack] == ["mem_report_marker_big", "main", "<module>"]
    assert top.frame.file.endswith("capture_script.py")
    assert second.frame.function == "mem_report_marker_small"
    assert near(second.bytes, 5 * MiB), second
    assert [frame.function for frame in second.stack][:3] == [
        "mem_report_marker_small",
        "mem_report_marker_big",
        "main",
    ]
    assert "mem_report_marker_churn" not in {site.frame.function for site in summary.by_peak[:5]}
    # ... and the totals count the churn, which was never live at the peak
    assert summary.by_total is not None
    by_total = {site.frame.function: site for site in summary.by_total}
    assert near(by_total["mem_report_marker_big"].bytes, 50 * MiB)
    assert near(by_total["mem_report_marker_churn"].bytes, 30 * MiB)
    assert by_total["mem_report_marker_churn"].allocations == 30
    assert [site.frame.function for site in summary.by_total[:3]] == [
        "mem_report_marker_big",
        "mem_report_marker_churn",
        "mem_report_marker_small",
    ]
    assert summary.total_allocated_bytes is not None
    assert summary.total_allocated_bytes >= 85 * MiB
    assert summary.total_allocations == sum(site.allocations for site in summary.by_total)
    # ... and the metadata is the capture's own
    assert summary.complete and not summary.aggregated and not summary.warnings
    assert summary.pid > 0
    assert "capture_script.py" in summary.command_line
    assert summary.duration_seconds is not None and 0 <= summary.duration_seconds < 30
    assert summary.start_time <= datetime.now(timezone.utc)
    assert summary.peak_stacks[0].frames[0].function == "mem_report_marker_big"


def test_cut_compressed_captures_are_told_from_whole_ones(
    captures: dict[str, Path], tmp_path: Path
) -> None:
    # GIVEN a closed capture (one LZ4 frame), the same without its last byte, and a
    # capture memray never closed (not compressed)
    from profiler.memory.lz4_frame import lz4_frame_state

    whole = captures["many"]
    cut = tmp_path / "cut.bin"
    cut.write_bytes(whole.read_bytes()[:-1])

    # THEN the frame says which is whole
    assert lz4_frame_state(whole) == "whole"
    assert lz4_frame_state(cut) == "truncated"
    assert lz4_frame_state(captures["killed"]) is None


def test_tree_text_is_deterministic() -> None:
    # GIVEN a summary with two stacks sharing a caller
    from profiler.memory.reader import CaptureSummary
    from profiler.memory.reports import render_tree
    from profiler.memory.stacks import Frame, StackUsage, sites

    main, big, small = Frame("main", "app.py", 3), Frame("big", "app.py", 7), Frame("s", "b.py", 1)
    calls_small = Frame("big", "app.py", 8)
    stacks = (StackUsage((big, main), 3 * MiB, 1), StackUsage((small, calls_small, main), MiB, 2))
    summary = CaptureSummary(
        path=Path("w.bin"),
        pid=7,
        command_line="app",
        python_allocator="pymalloc",
        native_traces=False,
        trace_python_allocators=False,
        aggregated=False,
        start_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
        end_time=None,
        duration_seconds=None,
        peak_memory_bytes=4 * MiB,
        total_allocations=None,
        total_allocated_bytes=None,
        complete=True,
        warnings=(),
        by_peak=sites(stacks),
        by_total=None,
        peak_stacks=stacks,
    )
    # WHEN the tree is drawn
    import io

    out = io.StringIO()
    render_tree(summary, out)

    # THEN outermost frame first, biggest child first, sizes inclusive
    assert out.getvalue() == textwrap.dedent(
        """\
        Allocations live at the peak of w.bin (pid 7): 4.00 MiB, 3 allocations

        └── 4.00 MiB (100.0%, 3 allocations) main app.py:3
            ├── 3.00 MiB (75.0%, 1 allocation) big app.py:7
            └── 1.00 MiB (25.0%, 2 allocations) big app.py:8
                └── 1.00 MiB (25.0%, 2 allocations) s b.py:1
        """
    )
    assert [(site.frame.function, site.bytes) for site in summary.by_peak] == [
        ("big", 3 * MiB),
        ("s", MiB),
    ]


# --- the command -------------------------------------------------------------------------------


@pytest.mark.slow
def test_all_reports_with_predictable_names(
    captures: dict[str, Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # GIVEN a capture and an output directory that does not exist yet
    out = tmp_path / "reports"

    # WHEN every report is asked for
    result = run_cli(
        "mem", "report", str(captures["big"]), "--kind", "all", "--temporal", "--leaks",
        "-o", str(out), "--json",
    )  # fmt: skip

    # THEN each is written under a name derived from the capture's
    data = report_json(result)
    assert data["combined"] is None
    (capture,) = data["captures"]
    expected = {
        "flamegraph": "big.flamegraph.html",
        "flamegraph-temporal": "big.flamegraph-temporal.html",
        "flamegraph-leaks": "big.flamegraph-leaks.html",
        "table": "big.table.html",
        "tree": "big.tree.txt",
        "stats": "big.stats.txt",
        "stats-json": "big.stats.json",
        "summary": "big.summary.txt",
    }
    assert capture["reports"] == {name: str(out / file) for name, file in expected.items()}
    assert capture["skipped"] == {} and capture["failed"] == {}
    assert sorted(path.name for path in out.iterdir()) == sorted(expected.values())
    for name in ("flamegraph", "flamegraph-temporal", "table", "tree", "stats", "summary"):
        assert "mem_report_marker_big" in (out / expected[name]).read_text(), name
    # ... memray's own stats agree with ours
    stats = json.loads((out / "big.stats.json").read_text())
    assert stats["total_bytes_allocated"] == capture["total_allocated_bytes"]
    assert stats["total_num_allocations"] == capture["total_allocations"]
    assert stats["metadata"]["peak_memory"] == capture["peak_memory_bytes"]
    # ... the JSON has the documented shape
    assert set(capture) >= {
        "path", "pid", "command_line", "peak_memory_bytes", "total_allocations",
        "total_allocated_bytes", "duration_seconds", "aggregated", "native_traces",
        "top_by_peak", "top_by_total", "reports", "complete", "warnings",
    }  # fmt: skip
    top = capture["top_by_peak"][0]
    assert set(top) == {"function", "file", "line", "bytes", "allocations", "stack", "stacks"}
    assert top["function"] == "mem_report_marker_big" and near(top["bytes"], 50 * MiB)
    assert [frame["function"] for frame in top["stack"]] == [
        "mem_report_marker_big",
        "main",
        "<module>",
    ]
    assert capture["top_by_total"][1]["function"] == "mem_report_marker_churn"
    assert near(capture["peak_memory_bytes"], 55 * MiB)
    assert capture["aggregated"] is False and capture["complete"] is True
    # ... leaks come with the warning about pymalloc, and one line names what was written
    assert "--trace-python-allocators" in result.stderr
    assert result.stderr.splitlines()[-1] == f"wrote 8 report(s) into {out}/"


def test_pool_of_two_workers_is_summed(
    captures: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    # GIVEN two workers' captures: 50 + 5 MiB and 20 + 5 MiB at their peaks
    big, small = captures["big"], captures["small"]

    # WHEN both are reported together
    data = report_json(run_cli("mem", "report", str(big), str(small), "--kind", "none", "--json"))

    # THEN each worker has its own summary, and the pool their sum
    first, second = data["captures"]
    assert near(first["peak_memory_bytes"], 55 * MiB)
    assert near(second["peak_memory_bytes"], 25 * MiB)
    assert first["reports"] == {} and second["reports"] == {}
    combined = data["combined"]
    assert [(w["path"], w["pid"]) for w in combined["workers"]] == [
        (str(big), first["pid"]),
        (str(small), second["pid"]),
    ]
    assert [w["peak_memory_bytes"] for w in combined["workers"]] == [
        first["peak_memory_bytes"],
        second["peak_memory_bytes"],
    ]
    assert combined["peak_memory_bytes"] == first["peak_memory_bytes"] + second["peak_memory_bytes"]
    site = combined["top_by_peak"][0]
    assert site["function"] == "mem_report_marker_big"
    assert near(site["bytes"], 70 * MiB), site
    shares = site["workers"]
    assert [share["pid"] for share in shares] == [first["pid"], second["pid"]]
    assert near(shares[0]["bytes"], 50 * MiB) and near(shares[1]["bytes"], 20 * MiB), shares
    assert site["bytes"] == sum(w["bytes"] for w in site["workers"])
    smalls = next(s for s in combined["top_by_peak"] if s["function"] == "mem_report_marker_small")
    assert near(smalls["bytes"], 10 * MiB)
    churn = next(s for s in combined["top_by_total"] if s["function"] == "mem_report_marker_churn")
    assert near(churn["bytes"], 60 * MiB) and churn["allocations"] == 60
    assert combined["total_allocated_bytes"] == (
        first["total_allocated_bytes"] + second["total_allocated_bytes"]
    )


def test_tables_for_people(
    captures: dict[str, Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # GIVEN two captures in a folder of their own (reports go beside them)
    copies = []
    for name in ("big", "small"):
        copies.append(tmp_path / f"worker-{name}.bin")
        copies[-1].write_bytes(captures[name].read_bytes())

    # WHEN they are reported without --json
    result = run_cli("mem", "report", *map(str, copies), "--kind", "tree")

    # THEN tables go to stdout, talk to stderr, and the trees sit beside the captures
    assert result.exit_code == 0, result.output
    assert "top sites at the peak" in result.stdout
    assert "top sites by total allocated" in result.stdout
    assert "mem_report_marker_big (" in result.stdout
    assert "pool of 2 workers" in result.stdout
    assert "per worker" in result.stdout
    assert "reading" not in result.stdout and "reading" in result.stderr
    assert result.stderr.splitlines()[-1] == "wrote 2 report(s) beside the capture(s)"
    for copy in copies:
        tree = copy.with_name(f"{copy.stem}.tree.txt").read_text()
        assert "mem_report_marker_small" in tree
        assert str(copy.with_name(f"{copy.stem}.tree.txt")) in result.stdout


def test_existing_reports_are_not_overwritten_without_force(
    captures: dict[str, Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # GIVEN a report already written
    args = ("mem", "report", str(captures["big"]), "--kind", "tree", "-o", str(tmp_path))
    assert run_cli(*args).exit_code == 0
    tree = tmp_path / "big.tree.txt"
    tree.write_text("mine")

    # WHEN the same report is asked for again
    refused = run_cli(*args)
    forced = run_cli(*args, "--force")

    # THEN it is refused with the path named, untouched, unless --force
    assert_one_error_line(refused, 2, str(tree))
    assert "--force" in refused.stderr
    assert forced.exit_code == 0, forced.output
    assert "mem_report_marker_big" in tree.read_text()


@pytest.mark.slow
def test_aggregated_capture(
    captures: dict[str, Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # GIVEN a capture memray aggregated as it went (memray attach --aggregate)
    capture = captures["aggregated"]

    # WHEN every report is asked for, the temporal flamegraph too
    result = run_cli(
        "mem", "report", str(capture), "--kind", "all", "--temporal", "--json", "-o", str(tmp_path)
    )

    # THEN the peak is there; what needs every allocation is skipped, and said so
    (data,) = report_json(result)["captures"]
    assert data["aggregated"] is True
    assert data["top_by_peak"][0]["function"] == "mem_report_marker_big"
    assert near(data["top_by_peak"][0]["bytes"], 50 * MiB)
    assert near(data["peak_memory_bytes"], 55 * MiB)
    assert data["top_by_total"] is None
    assert data["total_allocations"] is None and data["total_allocated_bytes"] is None
    assert set(data["reports"]) == {"flamegraph", "table", "tree", "summary"}
    assert set(data["skipped"]) == {"stats", "stats-json", "flamegraph-temporal"}
    assert "mem_report_marker_big" in Path(data["reports"]["flamegraph"]).read_text()
    assert "no stats, stats-json report" in result.stderr
    assert "no flamegraph-temporal report" in result.stderr


def test_killed_worker_capture_is_read_with_a_warning(
    captures: dict[str, Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # GIVEN a capture whose process was SIGKILLed while tracked: memray never closed it
    capture = captures["killed"]

    # WHEN it is reported
    result = run_cli("mem", "report", str(capture), "-o", str(tmp_path), "--json")

    # THEN what was written before the kill is reported, as incomplete
    (data,) = report_json(result)["captures"]
    assert data["complete"] is False
    assert "never closed" in data["warnings"][0]
    assert "never closed" in result.stderr
    assert data["top_by_peak"][0]["function"] == "mem_report_marker_big"
    assert near(data["top_by_peak"][0]["bytes"], 50 * MiB)
    assert "mem_report_marker_big" in (tmp_path / "killed.flamegraph.html").read_text()


def test_truncated_big_capture_is_read_as_far_as_it_goes(
    captures: dict[str, Path],
    run_cli: Callable[..., CliResult],
    cut_in_half: Callable[[Path], Path],
) -> None:
    # GIVEN a closed (so compressed) capture of many allocations, cut in half: past the
    # first blocks memray needs to read its header
    assert captures["many"].stat().st_size > 100_000
    half = cut_in_half(captures["many"])

    # WHEN it is reported
    result = run_cli("mem", "report", str(half), "--kind", "none", "--json")

    # THEN memray reads the complete blocks; the rest is a warning, not memray's raw log
    (data,) = report_json(result)["captures"]
    assert data["complete"] is False
    assert any("cut short" in warning for warning in data["warnings"]), data["warnings"]
    assert "cut short" in result.stderr
    assert "Memray ERROR" not in result.stderr
    assert data["top_by_peak"][0]["function"] == "mem_report_marker_big"
    from profiler.memory.reader import read_capture

    whole = read_capture(captures["many"])
    assert whole.complete and whole.total_allocations is not None
    assert 0 < data["total_allocations"] < whole.total_allocations


@pytest.mark.parametrize("damage", ["random bytes", "empty", "small capture cut in half"])
def test_unreadable_capture_exits_7(
    damage: str,
    captures: dict[str, Path],
    run_cli: Callable[..., CliResult],
    tmp_path: Path,
    cut_in_half: Callable[[Path], Path],
) -> None:
    # GIVEN a file memray cannot read: not a capture at all, or a small compressed
    # capture cut inside its first (only) LZ4 block, header included
    if damage == "small capture cut in half":
        bad = cut_in_half(captures["big"])
    else:
        bad = tmp_path / "bad.bin"
        bad.write_bytes(os.urandom(4096) if damage == "random bytes" else b"")

    # WHEN it is reported
    result = run_cli("mem", "report", str(bad), "-o", str(tmp_path / "out"))

    # THEN one line names it, and nothing is written
    assert_one_error_line(result, 7, str(bad), "not a readable memray capture")
    assert not (tmp_path / "out").exists()


def test_missing_capture_exits_7_before_anything_is_read(
    captures: dict[str, Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    missing = tmp_path / "gone.bin"
    result = run_cli("mem", "report", str(captures["big"]), str(missing), "-o", str(tmp_path))
    assert_one_error_line(result, 7, str(missing), "no such file")
    assert "reading" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_kind_is_a_usage_error(
    captures: dict[str, Path], run_cli: Callable[..., CliResult]
) -> None:
    result = run_cli("mem", "report", str(captures["big"]), "--kind", "flamegraph,pie")
    assert_one_error_line(result, 2, "'pie'")


def test_memray_missing_exits_5(
    captures: dict[str, Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # GIVEN a Python where `import memray` fails
    shadow = tmp_path / "shadow" / "memray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('memray is broken here')\n")

    # WHEN a report is asked for
    result = run_cli(
        "mem", "report", str(captures["big"]), "--json", env={"PYTHONPATH": str(shadow.parent)}
    )

    # THEN the tool is reported missing
    assert_one_error_line(result, 5, "memray")
    assert "pip install memray" in result.stderr


def test_the_stack_modules_doctests_pass() -> None:
    import doctest

    from profiler.memory import stacks

    result = doctest.testmod(stacks)
    assert result.attempted and not result.failed
