"""Was a worker OOM-killed? Its cgroup's counters and the kernel log say so.

The OOM killer ends a process with SIGKILL, which is all its parent (and
anyone else) sees. Two witnesses say more:

* the memory cgroup the process ran in counts OOM kills (cgroup v2
  ``memory.events`` ``oom_kill``; v1 ``memory.oom_control`` ``oom_kill``). A
  dead process's ``/proc/PID/cgroup`` is gone, so :func:`cgroup_of` is read
  while it lives (at the start of a session) and :func:`read_oom_kills`
  re-reads the counter after it died;
* the kernel log names the victim (``Memory cgroup out of memory: Killed
  process 1234 (python) ...``). :class:`KernelLog` remembers where the log was
  when the session started and later returns the OOM lines written since.
  ``/dev/kmsg`` and ``dmesg`` need root or CAP_SYSLOG when
  ``kernel.dmesg_restrict=1``; without either the log is "unreadable" (None),
  not "no OOM".

:func:`classify_exit` weighs the witnesses. The kernel log shows PIDs of the
initial PID namespace: inside a container with its own PID namespace they do
not match the PIDs we watch, and the cgroup counter is the evidence left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
KMSG = Path("/dev/kmsg")
# v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages).
_V1_UNLIMITED = 1 << 62
_KMSG_RECORD = 16384  # a read shorter than the record fails with EINVAL
_DMESG_TIMEOUT = 10.0

# mm/oom_kill.c (Linux 4.x-6.x), the lines that name a victim:
#   "%s: Killed process %d (%s) total-vm:%lukB, anon-rss:%lukB, ..." with %s "Out of memory",
#       "Out of memory (oom_kill_allocating_task)" or "Memory cgroup out of memory"
#       (before 4.19 without the prefix: "Killed process %d (%s) total-vm:...")
#   "oom-kill:constraint=%s,nodemask=%*pbl,cpuset=...,task=%s,pid=%d,uid=%d"
#   "oom_reaper: reaped process %d (%s), now anon-rss:%lukB, ..."
_KILLED = re.compile(r"\bKilled process (\d+) \(")
_OOM_KILL = re.compile(r"\boom-kill:constraint=\S*?,pid=(\d+)\b")
_REAPED = re.compile(r"\boom_reaper: reaped process (\d+) \(")
_PATTERNS = (_KILLED, _OOM_KILL, _REAPED)
_DMESG_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")

ExitKind = Literal["oom-killed", "killed", "exited", "unknown"]


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    """A process's memory cgroup, as read while the process lived."""

    path: Path  # the cgroup's folder under /sys/fs/cgroup
    version: int  # 1 or 2
    memory_limit: int | None  # bytes, the lowest limit of it and its ancestors; None: unlimited
    oom_kills: int | None  # OOM kills counted so far; None when the kernel does not count them

    @property
    def counter_file(self) -> str:
        return "memory.events" if self.version == 2 else "memory.oom_control"


@dataclass(frozen=True, slots=True)
class Exit:
    """How a process ended: ``kind``, and what says so (``evidence``), when anything does."""

    kind: ExitKind
    evidence: str | None = None


def cgroup_of(pid: int, *, root: Path = CGROUP_ROOT) -> CgroupInfo | None:
    """The memory cgroup ``pid`` runs in; None when it is gone or has no memory controller.

    cgroup v2 (the ``0::/path`` line of ``/proc/PID/cgroup``) when its hierarchy
    has the memory controller, else the v1 ``memory`` hierarchy (hybrid hosts
    mount v2 at ``/sys/fs/cgroup/unified`` without it). A path that does not
    exist under ``root`` (a container that sees the host's path but has its
    own cgroup mounted) is shortened from the left until it does.
    """
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    v1_path: str | None = None
    v2_path: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    v2_root = _v2_mount(root)
    if v2_path is not None and v2_root is not None and _has_memory_controller(v2_root):
        folder = _resolve(v2_root, v2_path)
        return CgroupInfo(folder, 2, _limit(folder, v2_root, 2), _oom_kills(folder, 2))
    v1_root = root / "memory"
    if v1_path is not None and v1_root.is_dir():
        folder = _resolve(v1_root, v1_path)
        return CgroupInfo(folder, 1, _limit(folder, v1_root, 1), _oom_kills(folder, 1))
    return None


def memory_limit(pid: int, *, root: Path = CGROUP_ROOT) -> int | None:
    """The memory limit (bytes) the cgroup of ``pid`` enforces; None when unlimited or unknown."""
    info = cgroup_of(pid, root=root)
    return None if info is None else info.memory_limit


def read_oom_kills(info: CgroupInfo) -> int | None:
    """The cgroup's OOM-kill counter now; None when it is gone (removed) or not counted."""
    return _oom_kills(info.path, info.version)


def oom_kill_lines(text_lines: Iterable[str], pid: int) -> list[str]:
    """The kernel log lines that say the OOM killer killed (or reaped) ``pid``.

    Accepts bare messages, ``/dev/kmsg`` records and ``dmesg`` lines alike; the
    table of candidate tasks the kernel prints before choosing is not a kill
    and does not match.

    >>> oom_kill_lines(["Out of memory: Killed process 12 (python) total-vm:1kB",
    ...                 "Out of memory: Killed process 123 (python) total-vm:1kB"], 12)
    ['Out of memory: Killed process 12 (python) total-vm:1kB']
    """
    found = []
    for line in text_lines:
        for pattern in _PATTERNS:
            match = pattern.search(line)
            if match is not None and int(match.group(1)) == pid:
                found.append(line.strip())
                break
    return found


def classify_exit(
    pid: int,
    *,
    returncode_or_signal: int | None,
    cgroup_before: CgroupInfo | None,
    cgroup_oom_kills_now: int | None,
    kernel_lines: Sequence[str] | None,
) -> Exit:
    """How ``pid`` ended, from what we know about it.

    ``returncode_or_signal`` follows :attr:`subprocess.Popen.returncode`: the
    exit status, or minus the signal that killed it; only a process's parent
    learns it (or someone who saw it as a zombie), so for anyone else's
    process it is None. ``cgroup_before`` is the process's cgroup read while it
    lived and ``cgroup_oom_kills_now`` that cgroup's counter now;
    ``kernel_lines`` the kernel log since the process was last seen alive
    (None: unreadable).

    ``oom-killed`` when a kernel line names the pid, or when the cgroup's
    OOM-kill counter rose and the process died by SIGKILL or of an unknown
    cause (the counter counts any process of the cgroup: a worker SIGKILLed by
    someone else while a sibling was OOM-killed would be blamed too; the
    kernel line, when readable, has no such doubt). Otherwise ``killed`` (by a
    signal), ``exited`` (with a status), or ``unknown``.
    """
    evidence: list[str] = []
    named = oom_kill_lines(kernel_lines or [], pid)
    if named:
        killed = [line for line in named if _KILLED.search(line)]
        evidence.append(f"kernel: {_message((killed or named)[0])}")
    by_sigkill_or_unknown = returncode_or_signal in (None, -signal.SIGKILL)
    if (
        cgroup_before is not None
        and cgroup_before.oom_kills is not None
        and cgroup_oom_kills_now is not None
        and cgroup_oom_kills_now > cgroup_before.oom_kills
        and (by_sigkill_or_unknown or named)
    ):
        evidence.append(
            f"cgroup {cgroup_before.counter_file} oom_kill {cgroup_before.oom_kills} -> "
            f"{cgroup_oom_kills_now} ({cgroup_before.path})"
        )
    if evidence:
        return Exit("oom-killed", "; ".join(evidence))
    if returncode_or_signal is None:
        return Exit("unknown")
    if returncode_or_signal < 0:
        return Exit("killed", f"killed by {_signal_name(-returncode_or_signal)}")
    return Exit("exited", f"exit status {returncode_or_signal}")


class KernelLog:
    """The kernel's OOM-kill lines written after :meth:`start`.

    Reads ``/dev/kmsg`` (non-blocking, from where it ended at start), else
    runs ``dmesg`` and keeps what follows the last line seen at start. When
    neither is readable, :attr:`source` is None, :attr:`problem` says why, and
    the line getters return None: "unreadable", not "no OOM". Only OOM lines
    are kept, so a long session costs no memory.
    """

    def __init__(self, kmsg: Path = KMSG, dmesg: Sequence[str] | None = ("dmesg",)) -> None:
        self._kmsg = kmsg
        self._dmesg = list(dmesg) if dmesg is not None else None
        self._fd: int | None = None
        self._mark: str | None = None
        self._lines: list[str] = []
        self.source: Literal["kmsg", "dmesg"] | None = None
        self.problem: str | None = None

    def start(self) -> KernelLog:
        """Marks the log's end as the window's start; a second call changes nothing."""
        if self.source is not None or self.problem is not None:
            return self
        problems = []
        try:
            fd = os.open(self._kmsg, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            problems.append(f"{self._kmsg}: {exc.strerror}")
        else:
            os.lseek(fd, 0, os.SEEK_END)
            self._fd, self.source = fd, "kmsg"
            return self
        if self._dmesg is not None:
            output, problem = self._run_dmesg()
            if output is not None:
                self._mark = output[-1] if output else None
                self.source = "dmesg"
                return self
            problems.append(problem or "dmesg failed")
        self.problem = "kernel log unreadable: " + "; ".join(problems)
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> KernelLog:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def oom_lines(self) -> list[str] | None:
        """Every OOM-kill line since :meth:`start`, any pid; None when the log is unreadable."""
        if self.source == "kmsg":
            self._read_kmsg()
            return list(self._lines)
        if self.source == "dmesg":
            output, _ = self._run_dmesg()
            if output is None:
                return list(self._lines)  # it worked at start; keep what it said then
            if self._mark is not None and self._mark in output:
                output = output[len(output) - output[::-1].index(self._mark) :]
            self._lines = [line for line in output if _any_oom(line)]
            return list(self._lines)
        return None

    def oom_kill_lines(self, pid: int) -> list[str] | None:
        """The OOM-kill lines naming ``pid`` since :meth:`start`; None when unreadable."""
        lines = self.oom_lines()
        return None if lines is None else oom_kill_lines(lines, pid)

    def _read_kmsg(self) -> None:
        assert self._fd is not None
        while True:
            try:
                record = os.read(self._fd, _KMSG_RECORD)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read it; go on
                    continue
                raise
            if not record:
                return
            message = _kmsg_message(record.decode("utf-8", "replace"))
            if _any_oom(message):
                self._lines.append(message)

    def _run_dmesg(self) -> tuple[list[str] | None, str | None]:
        assert self._dmesg is not None
        try:
            done = subprocess.run(
                self._dmesg,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_DMESG_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{self._dmesg[0]}: {exc}"
        if done.returncode != 0:
            return None, done.stderr.strip() or f"{self._dmesg[0]} exited {done.returncode}"
        return done.stdout.splitlines(), None


def _any_oom(line: str) -> bool:
    return any(pattern.search(line) for pattern in _PATTERNS)


def _kmsg_message(record: str) -> str:
    """``pri,seq,usec,flags;message\\n KEY=value...`` -> message."""
    first = record.split("\n", 1)[0]
    return first.split(";", 1)[1] if ";" in first else first


def _message(line: str) -> str:
    """A log line without its dmesg time stamp or kmsg record prefix."""
    if _DMESG_STAMP.match(line):
        return _DMESG_STAMP.sub("", line, count=1)
    head, sep, rest = line.partition(";")
    if sep and re.fullmatch(r"\d+,\d+,\d+,[^;]*", head):
        return rest
    return line


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _v2_mount(root: Path) -> Path | None:
    for candidate in (root, root / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def _has_memory_controller(v2_root: Path) -> bool:
    try:
        return "memory" in (v2_root / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def _resolve(mount: Path, path: str) -> Path:
    parts = [part for part in path.split("/") if part]
    for start in range(len(parts) + 1):
        folder = mount.joinpath(*parts[start:])
        if folder.is_dir():
            return folder
    return mount


def _limit(folder: Path, mount: Path, version: int) -> int | None:
    """The lowest limit of ``folder`` and its ancestors up to ``mount``: the one enforced."""
    name = "memory.max" if version == 2 else "memory.limit_in_bytes"
    limits = []
    current = folder
    while True:
        with contextlib.suppress(OSError, ValueError):
            text = (current / name).read_text().strip()
            if text != "max" and int(text) < _V1_UNLIMITED:
                limits.append(int(text))
        if current == mount or mount not in current.parents:
            break
        current = current.parent
    return min(limits) if limits else None


def _oom_kills(folder: Path, version: int) -> int | None:
    name = "memory.events" if version == 2 else "memory.oom_control"
    try:
        text = (folder / name).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None
