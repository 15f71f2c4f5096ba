"""Load memray's ``_inject`` library into a worker *now*, through one thread parked in a syscall.

memray's debugger scripts queue a pending call, break on malloc/free/PyMem_* and
load the library when some thread next allocates: a worker whose threads all
sleep in lock or queue waits (a wedged event loop in ``Condition.wait``, idle
AnyIO threads in ``Queue.get``) hits none until a timeout fires, 15-28 s on a
real gateway. Here one thread that sleeps in a syscall where it holds no libc
or allocator lock is stopped, made to call ``dlopen(_inject)`` and
``memray_spawn_client(port)`` (exactly the two calls memray's gdb script makes;
the spawned thread takes the GIL itself and runs what memray's control channel
sends), and put back as it was: its syscall restarts when it resumes.

ptrace is driven directly (ctypes) rather than through gdb: gdb 13 cannot
write the registers of a process on a CPU with AMX (``Couldn't write extended
state status: Bad address``), and the worker dies of the half-made call. Here
the extended state is saved and restored in the size the kernel reports.

Safe points (read from ``/proc/PID/task/TID/syscall``, then checked again in
the stopped thread's registers): ``futex`` in ``FUTEX_WAIT_BITSET`` (how glibc
waits in ``sem_wait``/``pthread_cond_wait``, i.e. Python locks, conditions and
the GIL; glibc's internal locks, malloc's arena lock among them, wait with
plain ``FUTEX_WAIT`` and are refused), ``epoll_wait``/``poll``/``select``,
``nanosleep``, ``read``/``recv``/``accept``: a thread blocked there from libc's
syscall wrapper holds no lock that ``dlopen`` or ``pthread_create`` take.

Only the chosen thread is stopped, for a few milliseconds; the others run on.
Run as a child process (``python -m profiler.capture.inject``), started in its
own session with SIGINT/SIGTERM/SIGHUP ignored, so that a Ctrl-C or the death
of the profiler does not cut it between "registers changed" and "registers
restored"; each step is time-boxed and every failure restores the thread and
detaches. Only SIGKILL of this child during the call itself (milliseconds)
can still leave the thread returning to nowhere: gdb's and memray's own
routes share that window.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# x86-64 syscall numbers of the safe blocking calls, and their names for messages
SAFE_SYSCALLS = {
    202: "futex",
    232: "epoll_wait",
    281: "epoll_pwait",
    441: "epoll_pwait2",
    7: "poll",
    271: "ppoll",
    23: "select",
    270: "pselect6",
    35: "nanosleep",
    230: "clock_nanosleep",
    0: "read",
    45: "recvfrom",
    47: "recvmsg",
    43: "accept",
    288: "accept4",
}
FUTEX = 202
FUTEX_CMD_MASK = 0x7F
FUTEX_WAIT_BITSET = 9
# what an interrupted blocking syscall returns while the thread is stopped
INTERRUPTED = {-4, -512, -513, -514, -516}  # EINTR, ERESTARTSYS/NOINTR/NOHAND, RESTARTBLOCK

PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
NT_X86_XSTATE = 0x202
WALL = 0x40000000
RTLD_NOW = 2
XSTATE_BUFFER = 1 << 16
STEP_SECONDS = {"stop": 2.0, "thread": 3.0, "load": 5.0}
LATE_LIMIT_SECONDS = 300.0
PAUSE_ENV = "PROFILER_INJECT_PAUSE_AT"  # tests: sleep at a step boundary, to be killed there


class InjectFailure(Exception):
    """A step did not complete; ``step`` names it, the message says why and what was undone."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


REGISTERS = (
    "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs "
    "eflags rsp ss fs_base gs_base ds es fs gs"
)


class Regs(ctypes.Structure):
    """``struct user_regs_struct`` of x86-64, as PTRACE_GETREGS fills it."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in REGISTERS.split(" ")]


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_ptrace.restype = ctypes.c_long


def _call(request: int, tid: int, addr: int | None = None, data: object = None) -> None:
    ctypes.set_errno(0)
    if _ptrace(request, tid, addr, data) == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True, slots=True)
class Candidate:
    """A thread blocked in a safe syscall, as ``/proc`` shows it before we stop anything."""

    tid: int
    syscall: str
    main: bool


def candidates(pid: int) -> list[Candidate]:
    """Threads of ``pid`` blocked in a safe syscall; non-main threads first (their stacks
    are whole mappings), futex and epoll waits before the rest."""
    found: list[Candidate] = []
    with contextlib.suppress(OSError):
        for name in os.listdir(f"/proc/{pid}/task"):
            tid = int(name)
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
            except OSError:
                continue
            if not fields or not fields[0].lstrip("-").isdigit():
                continue  # "running"
            number = int(fields[0])
            if number not in SAFE_SYSCALLS:
                continue
            if number == FUTEX and (int(fields[2], 16) & FUTEX_CMD_MASK) != FUTEX_WAIT_BITSET:
                continue
            found.append(Candidate(tid, SAFE_SYSCALLS[number], tid == pid))
    rank = {"futex": 0, "epoll_wait": 1, "epoll_pwait": 1, "epoll_pwait2": 1}
    return sorted(found, key=lambda c: (c.main, rank.get(c.syscall, 2), c.tid))


def is_python(pid: int) -> bool:
    """``pid`` maps a libpython, or its executable defines the C API (a static python)."""
    with open(f"/proc/{pid}/maps") as maps:
        if any("/libpython3" in line for line in maps):
            return True
    try:
        with open(f"/proc/{pid}/exe", "rb") as exe:
            return b"PyGILState_Ensure" in exe.read()
    except OSError:
        return False


def _libc_path_and_base(pid: int | str) -> tuple[str, int] | None:
    """The libc file mapped by ``pid`` and the address it is mapped at."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and int(parts[2], 16) == 0:
                path = parts[5]
                if Path(path).name.startswith("libc.so") or Path(path).name.startswith("libc-"):
                    return path, int(parts[0].split("-")[0], 16)
    return None


def _same_file(pid: int, path: str) -> bool:
    try:
        theirs = os.stat(f"/proc/{pid}/root{path}")
        ours = os.stat(path)
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def remote_symbols(pid: int) -> dict[str, int]:
    """``dlopen``/``dlsym`` in ``pid``: ours moved by where its libc (the same file) lies."""
    mine = _libc_path_and_base("self")
    theirs = _libc_path_and_base(pid)
    if mine is None or theirs is None or mine[0] != theirs[0] or not _same_file(pid, mine[0]):
        raise InjectFailure(
            "thread", f"PID {pid} does not map our libc ({mine and mine[0]}): another filesystem"
        )
    symbols = {}
    for name in ("dlopen", "dlsym", "dlerror"):
        address = ctypes.cast(getattr(_libc, name), ctypes.c_void_p).value
        assert address is not None
        symbols[name] = address - mine[1] + theirs[1]
    return symbols


class Stopped:
    """One thread of the worker, seized and stopped: its registers and extended state kept,
    put back by :meth:`release` whatever happened in between."""

    def __init__(self, pid: int, tid: int) -> None:
        self.pid = pid
        self.tid = tid
        self.pending_signal = 0
        self.regs = Regs()
        self.xstate = ctypes.create_string_buffer(XSTATE_BUFFER)
        self.xstate_len = 0
        self.seized = False
        self.changed = False

    def seize(self, timeout: float) -> None:
        _call(PTRACE_SEIZE, self.tid, 0, 0)
        self.seized = True
        _call(PTRACE_INTERRUPT, self.tid, 0, 0)
        status = self._wait(timeout, "stop")
        assert status is not None
        if os.WIFSTOPPED(status) and (status >> 16) != PTRACE_EVENT_STOP:
            # a signal was on its way to this thread: deliver it when we let go
            self.pending_signal = os.WSTOPSIG(status)
        _call(PTRACE_GETREGS, self.tid, 0, ctypes.byref(self.regs))
        vec = IoVec(ctypes.cast(self.xstate, ctypes.c_void_p), XSTATE_BUFFER)
        _call(PTRACE_GETREGSET, self.tid, NT_X86_XSTATE, ctypes.byref(vec))
        self.xstate_len = vec.len

    def at_safe_point(self) -> str | None:
        """The syscall the stopped thread was interrupted in, when it is a safe one."""
        number = _signed(self.regs.orig_rax)
        if number not in SAFE_SYSCALLS or _signed(self.regs.rax) not in INTERRUPTED:
            return None
        if number == FUTEX and (self.regs.rsi & FUTEX_CMD_MASK) != FUTEX_WAIT_BITSET:
            return None
        return SAFE_SYSCALLS[number]

    def call(self, function: int, args: list[int], timeout: float) -> int:
        """Run ``function(*args)`` on this thread; its return value. It returns to address 0:
        the SIGSEGV there is how we know it finished (and is not delivered).

        Past ``timeout`` the step is reported late (one JSON line, so the caller can tell
        the user at once) but the call is not abandoned: a thread pulled out of ``dlopen``
        could keep the loader's lock forever, and one left to return later would return
        to address 0 after we are gone. We wait for it (up to :data:`LATE_LIMIT_SECONDS`),
        then restore the thread as usual.
        """
        regs = Regs.from_buffer_copy(self.regs)
        top = (self.regs.rsp - 4096) & ~0xF
        self.write(top - 8, (0).to_bytes(8, "little"))
        regs.rsp = top - 8
        regs.rip = function
        regs.rax = 0
        regs.orig_rax = (1 << 64) - 1  # not in a syscall: no restart adjusts rip on resume
        for name, value in zip(("rdi", "rsi", "rdx"), args, strict=False):
            setattr(regs, name, value)
        self.changed = True
        _call(PTRACE_SETREGS, self.tid, 0, ctypes.byref(regs))
        _call(PTRACE_CONT, self.tid, 0, 0)
        started = time.monotonic()
        late = False
        while True:
            status = self._wait(0.05, "load", quiet=True)
            if status is None:
                waited = time.monotonic() - started
                if not late and waited > timeout:
                    late = True
                    _report({"step": "load", "late": True, "error": (
                        f"thread {self.tid} of PID {self.pid} did not return from the load "
                        f"within {timeout:g}s; waiting for it to return before restoring it"
                    )})  # fmt: skip
                if waited > LATE_LIMIT_SECONDS:
                    raise InjectFailure("load", f"thread {self.tid} never returned")
                continue
            signum = os.WSTOPSIG(status) if os.WIFSTOPPED(status) else 0
            _call(PTRACE_GETREGS, self.tid, 0, ctypes.byref(regs))
            if signum == signal.SIGSEGV and regs.rip == 0:
                return int(regs.rax)
            if (status >> 16) == PTRACE_EVENT_STOP:
                signum = 0
            # another signal for this thread mid-call: let it through (Python's handlers
            # only set a flag), and wait on
            _call(PTRACE_CONT, self.tid, 0, signum)

    def write(self, address: int, data: bytes) -> None:
        fd = os.open(f"/proc/{self.pid}/task/{self.tid}/mem", os.O_RDWR)
        try:
            os.pwrite(fd, data, address)
        finally:
            os.close(fd)

    def text(self, address: int, limit: int = 512) -> str:
        """The NUL-terminated string at ``address`` in the worker ("" for NULL)."""
        if address == 0:
            return ""
        fd = os.open(f"/proc/{self.pid}/task/{self.tid}/mem", os.O_RDONLY)
        try:
            data = os.pread(fd, limit, address)
        except OSError:
            return "(unreadable)"
        finally:
            os.close(fd)
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def scratch(self, strings: list[bytes]) -> list[int]:
        """Write NUL-terminated ``strings`` below the thread's stack pointer (past the red
        zone, above where :meth:`call` puts its frame); their addresses."""
        address = (self.regs.rsp - 512) & ~0xF
        addresses = []
        for text in strings:
            address -= (len(text) + 1 + 15) & ~0xF
            self.write(address, text + b"\0")
            addresses.append(address)
        return addresses

    def release(self) -> None:
        """Put the registers and extended state back, then let the thread go: its syscall
        restarts (the kernel reads ``orig_rax``/``rax`` as they were at the stop)."""
        if not self.seized:
            return
        try:
            if self.changed:
                _call(PTRACE_SETREGS, self.tid, 0, ctypes.byref(self.regs))
                vec = IoVec(ctypes.cast(self.xstate, ctypes.c_void_p), self.xstate_len)
                _call(PTRACE_SETREGSET, self.tid, NT_X86_XSTATE, ctypes.byref(vec))
        except OSError as exc:  # never try another thread after this: say it, loudly
            raise InjectFailure(
                "load", f"could not restore thread {self.tid}'s registers: {exc.strerror}"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                _call(PTRACE_DETACH, self.tid, 0, self.pending_signal)
            self.seized = False

    def _wait(self, timeout: float, step: str, *, quiet: bool = False) -> int | None:
        """The thread's next stop status; None after ``timeout`` when ``quiet``, else a
        failure of ``step``."""
        deadline = time.monotonic() + timeout
        while True:
            waited, status = os.waitpid(self.tid, os.WNOHANG | WALL)
            if waited == self.tid:
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    self.seized = False
                    raise InjectFailure(step, f"thread {self.tid} exited")
                return status
            if time.monotonic() >= deadline:
                if quiet:
                    return None
                raise InjectFailure(step, f"thread {self.tid} did not stop within {timeout:g}s")
            time.sleep(0.0005)


def _report(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def _pause(step: str) -> None:
    if os.environ.get(PAUSE_ENV) == step:
        _report({"paused": step})
        time.sleep(3600)


@contextlib.contextmanager
def _stopped(pid: int, tid: int, timeout: float) -> Iterator[Stopped]:
    thread = Stopped(pid, tid)
    try:
        thread.seize(timeout)
        yield thread
    finally:
        thread.release()


def inject(pid: int, library: Path, port: int, wait_safe: float) -> dict[str, object]:
    """Load ``library`` into ``pid`` and call its ``memray_spawn_client(port)`` from a thread
    at a safe point; what was done (thread, syscall, per-step seconds). Waits up to
    ``wait_safe`` seconds for a thread to reach a safe point."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    if not is_python(pid):
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        raise InjectFailure("python", f"PID {pid} does not seem to be running Python ({exe})")
    symbols = remote_symbols(pid)
    deadline = started + wait_safe
    tried: list[str] = []
    while True:
        for candidate in candidates(pid):
            _pause("thread")
            step_started = time.monotonic()
            try:
                with _stopped(pid, candidate.tid, STEP_SECONDS["stop"]) as thread:
                    timings["stop"] = time.monotonic() - step_started
                    syscall = thread.at_safe_point()
                    if syscall is None:
                        tried.append(f"{candidate.tid} left {candidate.syscall}")
                        continue
                    _pause("load")
                    load_started = time.monotonic()
                    path, symbol = thread.scratch([os.fsencode(library), b"memray_spawn_client"])
                    handle = thread.call(symbols["dlopen"], [path, RTLD_NOW], STEP_SECONDS["load"])
                    if handle == 0:
                        said = thread.call(symbols["dlerror"], [], STEP_SECONDS["load"])
                        raise InjectFailure(
                            "load", f"dlopen({library}) failed in PID {pid}: {thread.text(said)}"
                        )
                    spawn = thread.call(symbols["dlsym"], [handle, symbol], STEP_SECONDS["load"])
                    if spawn == 0:
                        raise InjectFailure("load", f"{library} has no memray_spawn_client")
                    result = thread.call(spawn, [port], STEP_SECONDS["load"])
                    timings["load"] = time.monotonic() - load_started
            except OSError as exc:
                tried.append(f"{candidate.tid}: {exc.strerror}")
                continue
            if _signed(result) & 0xFFFFFFFF:
                raise InjectFailure("load", f"memray_spawn_client failed in PID {pid}")
            _pause("channel")
            timings["total"] = time.monotonic() - started
            return {"tid": candidate.tid, "syscall": syscall, "seconds": timings}
        if time.monotonic() >= deadline:
            why = "; ".join(tried[-3:]) or "every thread was running or in an unsafe wait"
            raise InjectFailure(
                "thread", f"no thread of PID {pid} reached a safe point in {wait_safe:g}s ({why})"
            )
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    """The child process: one JSON line on stdout, exit 0 (done) or 1 (``step``, ``error``)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m profiler.capture.inject")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--library", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wait-safe", type=float, default=STEP_SECONDS["thread"])
    args = parser.parse_args(argv)
    try:
        done = inject(args.pid, args.library, args.port, args.wait_safe)
    except InjectFailure as exc:
        _report({"step": exc.step, "error": str(exc)})
        return 1
    except OSError as exc:
        gone = "" if os.path.exists(f"/proc/{args.pid}") else f" (PID {args.pid} is gone)"
        what = exc.filename or "ptrace"
        _report({"step": "stop", "error": f"{what}: {exc.strerror}{gone}"})
        return 1
    _report(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
