"""OOM evidence: kernel log lines, cgroup counters, and a real cgroup OOM kill when we may."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiler.targets import oom
from profiler.targets.oom import CgroupInfo, Exit, KernelLog, classify_exit, oom_kill_lines
from tests.helpers import retry

MiB = 1 << 20

# Linux 6.x mm/oom_kill.c as this machine's kernel wrote them (a cgroup v1 OOM, dmesg),
# and the same records as /dev/kmsg gives them.
DMESG = [
    "[ 1780.794807] Tasks state (memory values in pages):",
    "[ 1780.794808] [  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem "
    "pgtables_bytes swapents oom_score_adj name",
    "[ 1780.794811] [   7352]     0  7352    20534    19688    18048     1640         0   "
    "208896        0             0 python3",
    "[ 1780.794814] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
    "mems_allowed=0,oom_memcg=/process_api/8aa2/oomtest,task_memcg=/process_api/8aa2/oomtest,"
    "task=python3,pid=7352,uid=0",
    "[ 1780.794839] Memory cgroup out of memory: Killed process 7352 (python3) "
    "total-vm:82136kB, anon-rss:72192kB, file-rss:6560kB, shmem-rss:0kB, UID:0 "
    "pgtables:204kB oom_score_adj:0",
]
KMSG_RECORDS = [
    "3,2291,1780794839,-;Out of memory: Killed process 1234 (gunicorn) total-vm:1953124kB, "
    "anon-rss:1843200kB, file-rss:1024kB, shmem-rss:0kB, UID:1000 pgtables:3900kB "
    "oom_score_adj:0",
    "6,2292,1780815000,-;oom_reaper: reaped process 1234 (gunicorn), now anon-rss:0kB, "
    "file-rss:0kB, shmem-rss:0kB",
    "6,2293,1780815001,-;Out of memory (oom_kill_allocating_task): Killed process 12345 "
    "(python) total-vm:10kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB "
    "oom_score_adj:0",
]


def test_the_kill_lines_of_the_kernel_name_the_victim_and_nothing_else() -> None:
    # GIVEN a cgroup OOM as dmesg prints it: the candidates' table, then the kill
    # WHEN / THEN the oom-kill summary and the kill, not the table row with the same pid
    assert oom_kill_lines(DMESG, 7352) == DMESG[3:]
    assert oom_kill_lines(DMESG, 7353) == []
    # AND /dev/kmsg records, global OOM and the reaper; 1234 is not a prefix of 12345
    assert oom_kill_lines(KMSG_RECORDS, 1234) == KMSG_RECORDS[:2]
    assert oom_kill_lines(KMSG_RECORDS, 12345) == KMSG_RECORDS[2:]
    assert oom_kill_lines(KMSG_RECORDS, 123) == []


def _cgroup(before: int | None = 0) -> CgroupInfo:
    return CgroupInfo(Path("/sys/fs/cgroup/system.slice/gateway.service"), 2, 512 * MiB, before)


@pytest.mark.parametrize(
    ("returncode", "now", "kernel", "expected"),
    [
        (
            -9,
            1,
            None,
            Exit(
                "oom-killed",
                "cgroup memory.events oom_kill 0 -> 1 "
                "(/sys/fs/cgroup/system.slice/gateway.service)",
            ),
        ),
        (
            None,
            1,
            [],
            Exit(
                "oom-killed",
                "cgroup memory.events oom_kill 0 -> 1 "
                "(/sys/fs/cgroup/system.slice/gateway.service)",
            ),
        ),
        (-9, 0, None, Exit("killed", "killed by SIGKILL")),
        (-15, 1, None, Exit("killed", "killed by SIGTERM")),  # not how the OOM killer kills
        (0, 1, None, Exit("exited", "exit status 0")),
        (None, 0, None, Exit("unknown")),
        (None, None, None, Exit("unknown")),  # the cgroup went away with the container
        (
            None,
            None,
            [DMESG[4].replace("7352", "1234")],
            Exit("oom-killed", "kernel: " + DMESG[4][15:].replace("7352", "1234")),
        ),
    ],
)
def test_an_exit_is_classified_by_the_evidence_at_hand(
    returncode: int | None, now: int | None, kernel: list[str] | None, expected: Exit
) -> None:
    # WHEN
    found = classify_exit(
        1234,
        returncode_or_signal=returncode,
        cgroup_before=_cgroup(),
        cgroup_oom_kills_now=now,
        kernel_lines=kernel,
    )
    # THEN
    assert found == expected


def test_both_witnesses_are_quoted_when_both_speak() -> None:
    found = classify_exit(
        1234,
        returncode_or_signal=-9,
        cgroup_before=_cgroup(before=3),
        cgroup_oom_kills_now=4,
        kernel_lines=KMSG_RECORDS,
    )
    assert found.kind == "oom-killed"
    assert found.evidence == (
        "kernel: " + KMSG_RECORDS[0].split(";", 1)[1] + "; cgroup memory.events oom_kill 3 -> 4 "
        "(/sys/fs/cgroup/system.slice/gateway.service)"
    )


def test_a_v2_cgroup_is_read_from_its_files(tmp_path: Path) -> None:
    # GIVEN a cgroup v2 tree with the memory controller (our path in it does not exist, so
    # the mount's own folder stands for it, as in a container with its own cgroup mount)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "memory.max").write_text("268435456\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    # WHEN
    info = oom.cgroup_of(os.getpid(), root=tmp_path)
    # THEN
    assert info == CgroupInfo(tmp_path, 2, 256 * MiB, 2)
    (tmp_path / "memory.events").write_text("oom 3\noom_kill 3\noom_group_kill 0\n")
    assert oom.read_oom_kills(info) == 3
    (tmp_path / "memory.max").write_text("max\n")
    assert oom.memory_limit(os.getpid(), root=tmp_path) is None


def test_a_v1_cgroup_is_read_from_its_files(tmp_path: Path) -> None:
    own = Path("/proc/self/cgroup").read_text()
    if not any("memory" in line.split(":")[1].split(",") for line in own.splitlines()):
        pytest.skip("this machine has no cgroup v1 memory hierarchy")
    # GIVEN a v1 memory hierarchy (and a v2 one without the memory controller: hybrid)
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    # WHEN / THEN the huge value means "no limit"
    assert oom.cgroup_of(os.getpid(), root=tmp_path) == CgroupInfo(memory, 1, None, 1)


def test_our_own_cgroup_is_found_on_this_machine() -> None:
    info = oom.cgroup_of(os.getpid())
    if info is None:
        pytest.skip("no memory cgroup here")
    assert info.path.is_dir() and info.version in (1, 2)
    assert oom.cgroup_of(2**22 + 1) is None  # above pid_max's default: no such process


def test_an_unreadable_kernel_log_says_so_instead_of_no_oom(tmp_path: Path) -> None:
    # GIVEN neither /dev/kmsg nor dmesg
    log = KernelLog(kmsg=tmp_path / "kmsg", dmesg=None)
    # WHEN
    with log:
        lines = log.oom_kill_lines(1234)
    # THEN
    assert lines is None and log.source is None
    assert log.problem is not None and log.problem.startswith("kernel log unreadable: ")
    assert "No such file or directory" in log.problem


def test_dmesg_stands_in_for_kmsg_and_only_counts_what_came_after_start(tmp_path: Path) -> None:
    # GIVEN a "dmesg" that prints a file, with an OOM kill of 7352 from before the session
    buffer = tmp_path / "ring"
    buffer.write_text("\n".join(DMESG) + "\n")
    dmesg = (sys.executable, "-c", f"print(open({str(buffer)!r}).read(), end='')")
    with KernelLog(kmsg=tmp_path / "kmsg", dmesg=dmesg) as log:
        assert log.source == "dmesg"
        # WHEN the kernel kills 1234 during the session
        with buffer.open("a") as ring:
            ring.write(DMESG[4].replace("7352", "1234") + "\n")
        # THEN only the new kill counts
        assert log.oom_kill_lines(7352) == []
        assert log.oom_kill_lines(1234) == [DMESG[4].replace("7352", "1234")]


def test_a_failing_dmesg_is_unreadable_with_its_own_words(tmp_path: Path) -> None:
    fail = (sys.executable, "-c", "import sys; sys.exit('dmesg: read kernel buffer failed')")
    with KernelLog(kmsg=tmp_path / "kmsg", dmesg=fail) as log:
        assert log.oom_lines() is None
    assert log.problem is not None and "read kernel buffer failed" in log.problem


# --- a real OOM kill, in a memory cgroup of our own -------------------------------------


@dataclass(frozen=True)
class Sandbox:
    """A child memory cgroup with a small limit; processes moved in are OOM-killed on excess."""

    path: Path
    version: int

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")


@contextlib.contextmanager
def memory_sandbox(limit: int = 64 * MiB) -> Iterator[Sandbox]:
    """A memory cgroup of our own, removed at the end; skips the test when the machine can't.

    Tries a child of our cgroup v2 (enabling +memory for it if needed), then a child of
    our v1 memory cgroup. Detected, not assumed: root in a container may or may not
    have a writable cgroup mount.
    """
    problems: list[str] = []
    sandbox = _v2_sandbox(limit, problems) or _v1_sandbox(limit, problems)
    if sandbox is None:
        pytest.skip("cgroup v2 not writable here: " + "; ".join(problems))
    try:
        yield sandbox
    finally:
        _remove(sandbox)


def _own_paths() -> tuple[str | None, str | None]:
    v1 = v2 = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v1, v2


def _name() -> str:
    return f"profiler-test-{os.getpid()}-{time.monotonic_ns()}"


def _v2_sandbox(limit: int, problems: list[str]) -> Sandbox | None:
    _, own = _own_paths()
    mount = next(
        (
            m
            for m in (oom.CGROUP_ROOT, oom.CGROUP_ROOT / "unified")
            if (m / "cgroup.controllers").exists()
        ),
        None,
    )
    if own is None or mount is None:
        problems.append("no cgroup v2 hierarchy mounted")
        return None
    if "memory" not in (mount / "cgroup.controllers").read_text().split():
        problems.append(f"the v2 hierarchy at {mount} has no memory controller")
        return None
    parent = mount / own.lstrip("/")
    child = parent / _name()
    try:
        child.mkdir()
    except OSError as exc:
        problems.append(f"mkdir {child}: {exc.strerror}")
        return None
    try:
        if not (child / "memory.max").exists():
            (parent / "cgroup.subtree_control").write_text("+memory\n")
        (child / "memory.max").write_text(f"{limit}\n")
        with contextlib.suppress(OSError):
            (child / "memory.swap.max").write_text("0\n")
    except OSError as exc:
        problems.append(f"cgroup v2 memory controller for {child}: {exc.strerror}")
        child.rmdir()
        return None
    return Sandbox(child, 2)


def _v1_sandbox(limit: int, problems: list[str]) -> Sandbox | None:
    own, _ = _own_paths()
    mount = oom.CGROUP_ROOT / "memory"
    if own is None or not mount.is_dir():
        problems.append("no cgroup v1 memory hierarchy either")
        return None
    child = mount / own.lstrip("/") / _name()
    try:
        child.mkdir()
        (child / "memory.limit_in_bytes").write_text(f"{limit}\n")
    except OSError as exc:
        problems.append(f"cgroup v1 {child}: {exc.strerror}")
        with contextlib.suppress(OSError):
            child.rmdir()
        return None
    with contextlib.suppress(OSError):  # with swap, the limit would page out instead of OOM
        (child / "memory.memsw.limit_in_bytes").write_text(f"{limit}\n")
    return Sandbox(child, 1)


def _remove(sandbox: Sandbox) -> None:
    """Moves what is left back to the parent cgroup, then removes the folder."""
    for pid in (sandbox.path / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            (sandbox.path.parent / "cgroup.procs").write_text(f"{pid}\n")

    def removed() -> bool:
        try:
            sandbox.path.rmdir()
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return True
            if exc.errno != errno.EBUSY:
                raise
            return False
        return True

    retry(removed, timeout=10, what=f"rmdir {sandbox.path}")


HOG = """
import pathlib, time
go = pathlib.Path(GO)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.02)
hog = [b"x" * (1 << 20) for _ in range(400)]
print("survived", flush=True)
"""


@pytest.mark.slow
def test_a_real_cgroup_oom_kill_is_told_from_a_plain_sigkill(
    tmp_path: Path, python_process: Callable[[str], subprocess.Popen[str]]
) -> None:
    with memory_sandbox(64 * MiB) as sandbox:
        # GIVEN a process in a 64 MiB memory cgroup, its cgroup read while it lives
        go = tmp_path / "go"
        child = python_process(HOG.replace("GO", repr(str(go))))
        pid = child.pid
        sandbox.add(pid)
        before = oom.cgroup_of(pid)
        assert before is not None, "the sandbox cgroup is not visible in /proc/PID/cgroup"
        assert (before.path, before.version) == (sandbox.path, sandbox.version)
        assert before.memory_limit == 64 * MiB and before.oom_kills == 0
        kmsg = KernelLog().start()
        dmesg = KernelLog(kmsg=tmp_path / "no-kmsg").start()
        try:
            # WHEN it allocates 400 MiB
            go.touch()
            returncode = child.wait(timeout=60)
            now = oom.read_oom_kills(before)  # after the death, from what was read in life
            kernel = kmsg.oom_lines()
            from_dmesg = dmesg.oom_lines()
        finally:
            kmsg.close()
            dmesg.close()
    # THEN the kernel killed it with SIGKILL, and the cgroup counted it
    assert returncode == -signal.SIGKILL
    assert now == 1
    cgroup_only = classify_exit(
        pid,
        returncode_or_signal=None,  # as for a process we are not the parent of
        cgroup_before=before,
        cgroup_oom_kills_now=now,
        kernel_lines=None,
    )
    assert cgroup_only == Exit(
        "oom-killed", f"cgroup {before.counter_file} oom_kill 0 -> 1 ({sandbox.path})"
    )
    # AND the kernel log, when readable here, names the victim
    for source, lines in (("kmsg", kernel), ("dmesg", from_dmesg)):
        if lines is None:
            continue
        named = oom_kill_lines(lines, pid)
        assert any(f"Killed process {pid} (python" in line for line in named), (source, lines)
        found = classify_exit(
            pid,
            returncode_or_signal=returncode,
            cgroup_before=before,
            cgroup_oom_kills_now=None,
            kernel_lines=lines,
        )
        assert found.kind == "oom-killed"
        assert found.evidence is not None
        assert found.evidence.startswith(
            f"kernel: Memory cgroup out of memory: Killed process {pid}"
        )
