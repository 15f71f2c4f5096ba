"""WorkerWatcher against a real arbiter that forks workers and replaces the ones that die."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from profiler import jsonl
from profiler.targets import membership
from profiler.targets.membership import WorkerWatcher
from profiler.targets.oom import KernelLog
from tests.helpers import retry
from tests.test_oom import memory_sandbox

# A small gunicorn-like arbiter: forks two workers, prints "ready", replaces a worker that
# dies, logs "spawned PID" / "reaped PID STATUS" to CONTROL/arbiter.log. Workers obey files
# in CONTROL: exit-PID (exit 3), alloc-PID (allocate 400 MiB). rotate-PID makes the arbiter
# start a replacement first and retire PID half a second later (a graceful reload).
# REAP_DELAY holds a dead worker as a zombie (peeked with WNOWAIT) before reaping it.
ARBITER = """
import os, signal, time
from pathlib import Path

control = Path(CONTROL)
reap_delay = REAP_DELAY


def log(line):
    with open(control / "arbiter.log", "a") as out:
        out.write(line + "\\n")


def work():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    me = os.getpid()
    while True:
        if (control / f"exit-{me}").exists():
            os._exit(3)
        if (control / f"alloc-{me}").exists():
            hog = [b"x" * (1 << 20) for _ in range(400)]
            os._exit(4)
        time.sleep(0.02)


def spawn():
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(1)
    log(f"spawned {pid}")
    return pid


stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
children = {spawn() for _ in range(2)}
retiring = set()
print("ready", flush=True)
while not stopping:
    for request in control.glob("rotate-*"):
        old = int(request.name.split("-")[1])
        request.unlink()
        children.add(spawn())
        time.sleep(0.5)
        retiring.add(old)
        (control / f"exit-{old}").touch()
    try:
        dead = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        dead = None
    if dead is None:
        time.sleep(0.02)
        continue
    time.sleep(reap_delay)
    pid, status = os.waitpid(dead.si_pid, 0)
    children.discard(pid)
    log(f"reaped {pid} {status}")
    if pid not in retiring and not stopping:
        children.add(spawn())
for pid in children:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
for pid in children:
    os.waitpid(pid, 0)
"""

Start = Callable[[str], subprocess.Popen[str]]


class Arbiter:
    def __init__(self, python_process: Start, control: Path, reap_delay: float) -> None:
        self.control = control
        code = ARBITER.replace("CONTROL", repr(str(control))).replace(
            "REAP_DELAY", repr(reap_delay)
        )
        self.process = python_process(code)
        self.pid = self.process.pid
        self.initial = self.spawned()
        assert len(self.initial) == 2

    def spawned(self) -> list[int]:
        log = self.control / "arbiter.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [int(line.split()[1]) for line in lines if line.startswith("spawned ")]

    def replacement(self) -> int:
        return retry(lambda: self.spawned()[2:3], what="a replacement worker")[0]

    def touch(self, name: str) -> None:
        (self.control / name).touch()


@pytest.fixture
def arbiter(tmp_path: Path, python_process: Start) -> Callable[..., Arbiter]:
    def start(reap_delay: float = 0.0) -> Arbiter:
        control = tmp_path / "control"
        control.mkdir()
        return Arbiter(python_process, control, reap_delay)

    return start


def _events(watcher: WorkerWatcher, event: str, count: int = 1) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        matching = [e for e in watcher.events if e["event"] == event]
        return matching if len(matching) >= count else None

    return retry(found, timeout=15, what=f"{count} {event} event(s)")


@pytest.mark.slow
def test_a_sigkilled_worker_is_seen_dead_and_its_replacement_followed(
    tmp_path: Path, arbiter: Callable[..., Arbiter]
) -> None:
    # GIVEN an arbiter that holds dead workers as zombies for a second, as a busy one would
    gateway = arbiter(reap_delay=1.0)
    victim, survivor = gateway.initial
    path = tmp_path / "workers.jsonl"
    with WorkerWatcher(path, gateway.initial, gateway.pid, interval=0.1) as watcher:
        assert watcher.known == sorted(gateway.initial)
        # WHEN a worker is SIGKILLed
        os.kill(victim, signal.SIGKILL)
        replacement = gateway.replacement()
        vanished = _events(watcher, "vanished")
        # THEN the watcher follows the replacement
        assert retry(lambda: watcher.known == sorted([survivor, replacement]), what="known")
    # AND the file says how the worker died and who replaced it
    frame = membership.read(path)
    assert list(frame["event"]) == ["vanished", "appeared"] or list(frame["event"]) == [
        "appeared",
        "vanished",
    ]
    row = frame[frame["event"] == "vanished"].iloc[0]
    assert row["pid"] == victim
    assert row["exit"] == "killed"  # caught as a zombie: its status is readable
    assert row["returncode"] == -9
    assert row["replacement_pid"] == replacement
    assert row["oom_evidence"] is None
    assert vanished[0]["cgroup"] is None or Path(vanished[0]["cgroup"]).is_dir()
    appeared = frame[frame["event"] == "appeared"].iloc[0]
    assert appeared["pid"] == replacement and pd.isna(appeared["exit"])


@pytest.mark.slow
def test_a_fast_arbiter_reaps_before_we_look_and_the_cause_is_unknown(
    tmp_path: Path, arbiter: Callable[..., Arbiter]
) -> None:
    # GIVEN an arbiter that reaps and respawns at once (gunicorn's does)
    gateway = arbiter(reap_delay=0.0)
    victim = gateway.initial[0]
    with WorkerWatcher(tmp_path / "w.jsonl", gateway.initial, gateway.pid, interval=0.1) as w:
        # WHEN
        os.kill(victim, signal.SIGKILL)
        replacement = gateway.replacement()
        vanished = _events(w, "vanished")[0]
    # THEN the replacement is paired, whatever order the two were seen in
    assert vanished["pid"] == victim
    assert vanished["exit"] in ("killed", "unknown")
    assert vanished["replacement_pid"] == replacement


@pytest.mark.slow
def test_a_worker_that_exits_on_its_own_is_told_from_a_killed_one(
    tmp_path: Path, arbiter: Callable[..., Arbiter]
) -> None:
    gateway = arbiter(reap_delay=1.0)
    leaver = gateway.initial[1]
    with WorkerWatcher(tmp_path / "w.jsonl", gateway.initial, gateway.pid, interval=0.1) as w:
        # WHEN a worker exits with status 3 (gunicorn's max_requests is an exit too)
        gateway.touch(f"exit-{leaver}")
        replacement = gateway.replacement()
        vanished = _events(w, "vanished")[0]
    # THEN
    assert (vanished["pid"], vanished["exit"], vanished["returncode"]) == (leaver, "exited", 3)
    assert vanished["oom_evidence"] is None
    assert vanished["replacement_pid"] == replacement


@pytest.mark.slow
def test_a_replacement_started_before_the_old_worker_left_is_paired(
    tmp_path: Path, arbiter: Callable[..., Arbiter]
) -> None:
    # GIVEN a reload that starts the new worker half a second before retiring the old one
    gateway = arbiter(reap_delay=0.0)
    old = gateway.initial[0]
    with WorkerWatcher(tmp_path / "w.jsonl", gateway.initial, gateway.pid, interval=0.1) as w:
        # WHEN
        gateway.touch(f"rotate-{old}")
        new = gateway.replacement()
        vanished = _events(w, "vanished")[0]
        order = [e["event"] for e in w.events]
    # THEN the child that appeared first is still the replacement
    assert order == ["appeared", "vanished"]
    assert (vanished["pid"], vanished["replacement_pid"]) == (old, new)


@pytest.mark.slow
def test_the_arbiter_going_away_takes_its_workers_and_nothing_replaces_them(
    tmp_path: Path, arbiter: Callable[..., Arbiter]
) -> None:
    gateway = arbiter(reap_delay=0.0)
    path = tmp_path / "w.jsonl"
    with WorkerWatcher(path, gateway.initial, gateway.pid, interval=0.1) as watcher:
        # WHEN the arbiter is told to stop (it stops its workers, then exits)
        os.kill(gateway.pid, signal.SIGTERM)
        _events(watcher, "master-vanished")
        _events(watcher, "vanished", count=2)
        assert watcher.known == []
    gateway.process.wait(timeout=10)
    # THEN
    frame = membership.read(path)
    workers = frame[frame["event"] == "vanished"]
    assert sorted(workers["pid"]) == sorted(gateway.initial)
    assert workers["replacement_pid"].isna().all()
    master = frame[frame["event"] == "master-vanished"].iloc[0]
    assert master["pid"] == gateway.pid
    assert master["exit"] in ("exited", "unknown")  # a zombie of ours until wait() above
    assert "appeared" not in set(frame["event"])


@pytest.mark.slow
def test_without_a_master_vanishes_are_written_at_once(
    tmp_path: Path, python_process: Start
) -> None:
    # GIVEN two plain processes and no master to replace them
    code = "import time; print('ready', flush=True); time.sleep(120)"
    first, second = python_process(code), python_process(code)
    path = tmp_path / "w.jsonl"
    with WorkerWatcher(path, [first.pid, second.pid], None, interval=0.1) as watcher:
        # WHEN one is killed (a child of ours: a zombie until we reap it)
        os.kill(first.pid, signal.SIGKILL)
        vanished = _events(watcher, "vanished")[0]
        first.wait(timeout=10)
        assert watcher.known == [second.pid]
    # THEN
    assert vanished["exit"] == "killed" and vanished["replacement_pid"] is None
    header = jsonl.read(path, format=membership.FORMAT, version=membership.VERSION, hint="").header
    assert header["initial"] == [first.pid, second.pid] and header["master_pid"] is None


@pytest.mark.slow
def test_a_real_oom_kill_of_a_worker_is_named_with_its_evidence(
    tmp_path: Path, arbiter: Callable[..., Arbiter]
) -> None:
    with memory_sandbox() as sandbox:
        # GIVEN a worker in a 64 MiB memory cgroup
        gateway = arbiter(reap_delay=0.0)
        victim = gateway.initial[0]
        sandbox.add(victim)
        path = tmp_path / "workers.jsonl"
        with WorkerWatcher(path, gateway.initial, gateway.pid, interval=0.1) as watcher:
            # WHEN it allocates 400 MiB
            gateway.touch(f"alloc-{victim}")
            replacement = gateway.replacement()
            vanished = _events(watcher, "vanished")[0]
            kernel = KernelLog().start()
            kernel_readable = kernel.source is not None
            kernel.close()
    # THEN
    assert vanished["pid"] == victim and vanished["exit"] == "oom-killed"
    assert vanished["cgroup"] == str(sandbox.path)
    counter = "memory.events" if sandbox.version == 2 else "memory.oom_control"
    assert f"cgroup {counter} oom_kill 0 -> 1 ({sandbox.path})" in vanished["oom_evidence"]
    if kernel_readable:
        assert vanished["oom_evidence"].startswith(
            f"kernel: Memory cgroup out of memory: Killed process {victim} ("
        )
    assert vanished["replacement_pid"] == replacement
    assert membership.read(path).query("event == 'vanished'")["exit"].tolist() == ["oom-killed"]


def test_the_frames_have_the_documented_columns_and_dtypes(tmp_path: Path) -> None:
    # GIVEN a file with only its header, and one with both kinds of event
    expected = {
        "time": "float64",
        "pid": "int64",
        "event": "object",
        "exit": "object",
        "oom_evidence": "object",
        "cgroup": "object",
        "replacement_pid": "Int64",
        "returncode": "Int64",
    }
    with WorkerWatcher(tmp_path / "none.jsonl", [], None, interval=0.1):
        pass
    # WHEN / THEN
    for frame in (membership.empty(), membership.read(tmp_path / "none.jsonl")):
        assert frame.empty
        assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == expected
    lines = [
        '{"format":"profiler-worker-events","initial":[1],"kind":"header","master_pid":9,'
        '"version":1}',
        '{"event":"appeared","pid":2,"time":10.5}',
        '{"cgroup":null,"event":"vanished","exit":"unknown","oom_evidence":null,"pid":1,'
        '"replacement_pid":2,"returncode":null,"time":10.0}',
    ]
    (tmp_path / "two.jsonl").write_text("\n".join(lines) + "\n")
    frame = membership.read(tmp_path / "two.jsonl")
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == expected
    assert frame["replacement_pid"].tolist()[1] == 2 and pd.isna(frame["replacement_pid"][0])
