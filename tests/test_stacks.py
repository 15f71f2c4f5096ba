"""``py-spy dump`` against real Python processes: samples, folding, diagnosis, periodic rounds."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from profiler.capture.processes import stop_pid
from profiler.capture.stacks import (
    DumpFailure,
    Frame,
    StackSample,
    dump,
    dump_command,
    dump_workers,
    fold,
    periodic_dumps,
    resolve_pyspy,
)
from profiler.errors import AttachError, ExitCode, ToolMissingError

TARGET = """
import threading, time

def lab_sleeping_marker():
    while True:
        time.sleep(0.5)

def lab_busy_loop_marker():
    n = 0
    while True:
        n += 1

threading.Thread(target=lab_sleeping_marker, name="sleeper", daemon=True).start()
print("ready", flush=True)
lab_busy_loop_marker()
"""


@pytest.fixture
def target(python_process) -> subprocess.Popen[str]:
    return python_process(TARGET)


@pytest.fixture
def second_target(python_process) -> subprocess.Popen[str]:
    return python_process(TARGET)


def names(sample: StackSample) -> list[str]:
    return [frame.name for frame in sample.frames]


def by_thread(samples: list[StackSample]) -> dict[str | None, StackSample]:
    return {sample.thread_name: sample for sample in samples}


def sample(pid: int, *frames: str) -> StackSample:
    """A sample with frames innermost first, for the pure functions."""
    return StackSample(
        worker_pid=pid,
        thread_id=1,
        thread_name="MainThread",
        taken_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        dump_seconds=0.01,
        active=True,
        owns_gil=False,
        frames=tuple(
            Frame(name, "/srv/app.py", i + 1, None, "app.py") for i, name in enumerate(frames)
        ),
    )


def test_folded_is_outermost_first_like_pyspy_raw() -> None:
    # GIVEN a stack innermost first, as py-spy gives it, with a native frame
    stack = StackSample(
        worker_pid=1,
        thread_id=1,
        thread_name=None,
        taken_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        dump_seconds=0.0,
        active=False,
        owns_gil=False,
        frames=(
            Frame("clock_nanosleep", "/usr/lib/libc.so.6", 0, "/usr/lib/libc.so.6", "libc.so.6"),
            Frame("send", "/srv/httpx/_client.py", 1617, None, "httpx/_client.py"),
            Frame("list_tools", "/srv/app.py", 40, None, None),
        ),
    )
    # WHEN / THEN
    assert stack.folded() == (
        "list_tools (app.py:40);send (httpx/_client.py:1617);clock_nanosleep (libc.so.6)"
    )


def test_fold_counts_identical_stacks_most_common_first() -> None:
    samples = [
        sample(10, "send", "list_tools"),
        sample(11, "send", "list_tools"),
        sample(11, "send", "list_tools"),
        sample(10, "sleep", "worker"),
    ]
    assert fold(samples) == [
        ("list_tools (app.py:2);send (app.py:1)", 3, [10, 11]),
        ("worker (app.py:2);sleep (app.py:1)", 1, [10]),
    ]


def test_dump_command_has_the_options() -> None:
    argv = dump_command(123, pyspy=Path("/bin/sh"), native=True, locals_=True, nonblocking=True)
    assert argv == [
        "/bin/sh",
        *("dump", "--json", "--pid", "123", "--native", "--locals", "--nonblocking"),
    ]


@pytest.mark.slow
def test_dump_returns_every_thread_with_its_frames(target: subprocess.Popen[str]) -> None:
    # GIVEN a process busy in one thread and sleeping in another
    before = datetime.now(timezone.utc)
    # WHEN
    samples = dump(target.pid)
    # THEN
    threads = by_thread(samples)
    assert set(threads) == {"MainThread", "sleeper"}, samples
    main, sleeper = threads["MainThread"], threads["sleeper"]
    assert names(main)[0] == "lab_busy_loop_marker"  # innermost first
    assert names(main)[-1] == "<module>"
    assert "lab_sleeping_marker" in names(sleeper)
    assert not sleeper.active
    for s in samples:
        assert s.worker_pid == target.pid
        assert s.taken_at.tzinfo is not None
        assert s.taken_at.utcoffset() == timedelta(0)
        assert before <= s.taken_at <= datetime.now(timezone.utc)
        assert 0 < s.dump_seconds < 10
        assert s.os_thread_id is not None
    assert main.os_thread_id == target.pid
    assert main.folded().startswith("<module> (<string>:")
    assert main.folded().split(";")[-1].startswith("lab_busy_loop_marker (<string>:")
    assert "lab_sleeping_marker (<string>:" in sleeper.folded()


@pytest.mark.slow
def test_dump_reads_locals_only_when_asked(target: subprocess.Popen[str]) -> None:
    plain = by_thread(dump(target.pid))["MainThread"]
    with_locals = by_thread(dump(target.pid, locals_=True))["MainThread"]
    assert plain.frames[0].locals is None
    assert with_locals.frames[0].locals is not None
    assert [local.name for local in with_locals.frames[0].locals] == ["n"]


@pytest.mark.slow
def test_fold_counts_two_processes_running_the_same_code_as_one_stack(
    target: subprocess.Popen[str], second_target: subprocess.Popen[str]
) -> None:
    # GIVEN two workers sleeping in the same place
    samples = [*dump(target.pid), *dump(second_target.pid)]
    # WHEN
    folded = fold(s for s in samples if s.thread_name == "sleeper")
    # THEN
    assert len(folded) == 1, folded
    stack, count, pids = folded[0]
    assert "lab_sleeping_marker" in stack
    assert count == 2
    assert pids == sorted([target.pid, second_target.pid])


@pytest.mark.slow
def test_dump_of_a_missing_pid_says_no_process() -> None:
    # GIVEN a PID that is no longer used: a child we started and reaped
    child = subprocess.Popen(["true"])
    child.wait()
    # WHEN / THEN
    with pytest.raises(AttachError) as info:
        dump(child.pid)
    assert info.value.exit_code is ExitCode.CANNOT_ATTACH
    assert int(info.value.exit_code) == 3
    assert f"no process with PID {child.pid}" in info.value.message
    assert "py-spy:" in info.value.message


@pytest.mark.slow
def test_dump_of_a_non_python_process_says_so() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(AttachError) as info:
            dump(sleeper.pid)
    finally:
        stop_pid(sleeper.pid)
        sleeper.wait()
    assert info.value.exit_code == 3
    assert f"PID {sleeper.pid} is not a Python process" in info.value.message
    assert "sleep" in info.value.message  # /proc/PID/exe


def test_missing_pyspy_is_tool_missing() -> None:
    with pytest.raises(ToolMissingError) as info:
        dump(os.getpid(), pyspy=Path("/nonexistent/py-spy"))
    assert info.value.exit_code is ExitCode.TOOL_MISSING
    assert int(info.value.exit_code) == 5
    assert "/nonexistent/py-spy" in info.value.message


def test_ptrace_denied_names_the_fix(tmp_path: Path) -> None:
    # GIVEN a py-spy that answers as it does for an unprivileged user
    fake = tmp_path / "py-spy"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'Permission Denied: Try running again with elevated permissions by going' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    # WHEN
    with pytest.raises(AttachError) as info:
        dump(os.getpid(), pyspy=fake)
    # THEN
    assert info.value.exit_code == 3
    assert "permission denied" in info.value.message
    assert "Try running again with elevated permissions" in info.value.message  # py-spy's line
    assert info.value.hint is not None
    assert "CAP_SYS_PTRACE" in info.value.hint
    assert "ptrace_scope" in info.value.hint


def torn_then_real(tmp_path: Path, torn: int) -> Path:
    """A py-spy that fails as a torn nonblocking read does ``torn`` times, then is py-spy.

    A stand-in: a real torn read (the worker freeing what py-spy follows) cannot be
    produced on demand; everything after the stand-in's failures is the real py-spy.
    """
    real = resolve_pyspy(None)
    tmp_path.mkdir(exist_ok=True)
    count = tmp_path / "calls"
    fake = tmp_path / "py-spy"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo x >> {count}\n"
        f"if [ $(wc -l < {count}) -le {torn} ]; then\n"
        "  echo 'Error: Failed to get stack traces: Bad address (os error 14)' >&2; exit 1\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    return fake


def calls(fake: Path) -> int:
    return len((fake.parent / "calls").read_text().splitlines())


@pytest.mark.slow
def test_a_torn_nonblocking_read_is_tried_again(
    target: subprocess.Popen[str], tmp_path: Path
) -> None:
    # GIVEN a py-spy whose first two nonblocking reads are torn
    fake = torn_then_real(tmp_path, torn=2)
    # WHEN the worker is dumped without pausing it
    samples = dump(target.pid, pyspy=fake, nonblocking=True)
    # THEN the third read gave its stacks
    assert calls(fake) == 3 and samples and samples[0].worker_pid == target.pid


@pytest.mark.slow
def test_torn_reads_give_up_after_the_retries_and_blocking_dumps_never_retry(
    target: subprocess.Popen[str], tmp_path: Path
) -> None:
    fake = torn_then_real(tmp_path, torn=3)
    with pytest.raises(AttachError) as info:
        dump(target.pid, pyspy=fake, nonblocking=True)
    assert calls(fake) == 3 and "Bad address" in info.value.message
    blocking = torn_then_real(tmp_path / "blocking", torn=1)
    with pytest.raises(AttachError):
        dump(target.pid, pyspy=blocking)
    assert calls(blocking) == 1


@pytest.mark.slow
def test_periodic_dumps_keep_a_fixed_rate(target: subprocess.Popen[str]) -> None:
    # WHEN dumping every 0.25 s for 1.5 s
    records = list(periodic_dumps([target.pid], interval=0.25, seconds=1.5))
    # THEN about six rounds, one stamp per round, each later than the last
    assert all(isinstance(r, StackSample) for r in records), records
    stamps = sorted({r.taken_at for r in records})
    assert 5 <= len(stamps) <= 7, stamps
    assert [r.taken_at for r in records] == sorted(r.taken_at for r in records)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert all(0.15 < gap < 0.5 for gap in gaps), gaps


@pytest.mark.slow
def test_periodic_dumps_report_a_dead_worker_once_and_go_on(
    target: subprocess.Popen[str], second_target: subprocess.Popen[str]
) -> None:
    # GIVEN two workers dumped every 0.2 s
    records: list[StackSample | DumpFailure] = []
    stop = threading.Event()
    for record in periodic_dumps(
        [target.pid, second_target.pid], interval=0.2, seconds=None, stop=stop
    ):
        records.append(record)
        rounds_of_second = {r.taken_at for r in records if r.worker_pid == second_target.pid}
        # WHEN the first one dies after its second round
        rounds_of_first = {r.taken_at for r in records if r.worker_pid == target.pid}
        if len(rounds_of_first) == 2 and target.poll() is None:
            target.kill()
            target.wait()
        if len(rounds_of_second) >= 6:
            stop.set()
    # THEN one failure for the dead worker, and the other kept being dumped
    failures = [r for r in records if isinstance(r, DumpFailure)]
    assert len(failures) == 1, failures
    assert failures[0].worker_pid == target.pid
    assert failures[0].dropped
    assert "no process" in failures[0].reason
    after = [
        r
        for r in records
        if r.worker_pid == second_target.pid and r.taken_at > failures[0].taken_at
    ]
    assert len({r.taken_at for r in after}) >= 3


def test_periodic_dumps_need_pyspy() -> None:
    with pytest.raises(ToolMissingError):
        next(periodic_dumps([1], interval=1, seconds=1, pyspy=Path("/nonexistent/py-spy")))


@pytest.mark.slow
def test_dump_workers_reports_each_failure_and_keeps_the_rest(
    target: subprocess.Popen[str],
) -> None:
    # GIVEN a live worker and a PID that is gone
    gone = subprocess.Popen(["true"])
    gone.wait()
    # WHEN
    samples, failures = dump_workers([target.pid, gone.pid])
    # THEN
    assert {s.thread_name for s in samples} == {"MainThread", "sleeper"}
    assert list(failures) == [gone.pid]
    assert "no process" in failures[gone.pid].message
