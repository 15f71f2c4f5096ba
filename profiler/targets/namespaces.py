"""A target in other namespaces than ours (a container, a pod, ``unshare``): how to reach it.

From the host, a process in a container is reachable by its *host* PID, but
what runs inside it sees other things:

* **pid**: it has another PID inside (``NSpid:`` in ``/proc/PID/status`` lists
  one per level, host first); a debugger started in its PID namespace must be
  given the inner one.
* **mnt**: its files (interpreter, site-packages, ``/tmp``) are its own. We
  read and write them from the host through ``/proc/PID/root/...``.
* **net**: its ``127.0.0.1`` is not ours. memray's attach opens a local TCP
  control channel that the worker connects to: the memray client must listen
  on the worker's loopback, so it runs in the worker's network namespace.

So memray's client, and anything else that must run "next to" the worker,
runs under ``nsenter --target PID --mount --pid --net`` (``--user`` too when
the worker is in a user namespace: rootless Podman). ``mount_namespace_prefix``
in :mod:`profiler.targets.interpreter` enters the mount namespace only, for
asking the worker's interpreter what it can import; this module builds on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from profiler.errors import AttachError, ToolMissingError

# The namespaces that change how we reach a process, with nsenter's flag for each.
KINDS = {"mnt": "--mount", "pid": "--pid", "net": "--net", "user": "--user"}
# Where a worker may write a capture in its own filesystem, best first: /tmp is
# what images expect to be writable; /dev/shm is a tmpfs even with --read-only.
# Paths of the worker's filesystem; the folder made in one is 0700, owned by its user.
SCRATCH_CANDIDATES = ("/tmp", "/dev/shm", "/var/tmp")  # noqa: S108
# Not "profiler": `python -m profiler` run from /tmp would import that folder instead.
SCRATCH_NAME = "profiler-captures"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_ONLY_HINT = (
    "give the container a writable /tmp (docker run --tmpfs /tmp; Kubernetes: an emptyDir "
    "volume mounted at /tmp) and retry"
)


@dataclass(frozen=True, slots=True)
class Namespaces:
    """Where ``pid`` (a host PID) lives: the namespaces it does not share with us.

    ``ns_pid`` is its PID in its own PID namespace (innermost ``NSpid``);
    ``foreign`` names the namespaces (``mnt``, ``pid``, ``net``, ``user``) that
    differ from ours, in that order. Empty ``foreign``: a local process.
    """

    pid: int
    ns_pid: int
    foreign: tuple[str, ...] = ()

    @property
    def isolated(self) -> bool:
        """True when anything that runs next to the worker must enter its namespaces."""
        return bool(self.foreign)

    @property
    def other_filesystem(self) -> bool:
        return "mnt" in self.foreign

    def enter(self) -> list[str]:
        """``nsenter --target PID --mount --pid --net --`` for the namespaces it does not share.

        Empty for a local process. ``--pid`` makes nsenter fork, so what runs
        sees the worker as ``ns_pid``; ``--user`` keeps our credentials mapped.

        >>> Namespaces(31337, 7, ("mnt", "pid", "net")).enter()[1:]
        ['--target', '31337', '--mount', '--pid', '--net', '--']
        >>> Namespaces(4242, 4242).enter()
        []
        """
        if not self.foreign:
            return []
        flags = [KINDS[kind] for kind in KINDS if kind in self.foreign]
        if "user" in self.foreign:
            flags.append("--preserve-credentials")
        return [nsenter(), "--target", str(self.pid), *flags, "--"]

    def host_path(self, inside: str | PurePosixPath | Path) -> Path:
        """Where a path of the worker's filesystem is, seen from here.

        >>> Namespaces(31337, 7, ("mnt",)).host_path("/tmp/profiler-captures/x.bin")
        PosixPath('/proc/31337/root/tmp/profiler-captures/x.bin')
        >>> Namespaces(4242, 4242).host_path("/tmp/x.bin")
        PosixPath('/tmp/x.bin')
        """
        text = str(inside)
        return Path(f"/proc/{self.pid}/root{text}") if self.other_filesystem else Path(text)

    def label(self) -> str:
        """``pid 31337 (7 in its namespace)``: both PIDs, for messages."""
        if self.ns_pid == self.pid:
            return f"PID {self.pid}"
        return f"PID {self.pid} ({self.ns_pid} in its PID namespace)"


def namespaces_of(pid: int, *, proc: Path = Path("/proc")) -> Namespaces:
    """The namespaces ``pid`` does not share with this process; unreadable ones count as shared.

    Raises :class:`AttachError` when the process does not exist.
    """
    if not (proc / str(pid)).exists():
        raise AttachError(f"no process with PID {pid}", hint="list the workers: profiler workers")
    foreign = []
    for kind in KINDS:
        try:
            theirs = os.readlink(proc / str(pid) / "ns" / kind)
            ours = os.readlink(proc / "self" / "ns" / kind)
        except OSError:
            continue
        if theirs != ours:
            foreign.append(kind)
    return Namespaces(pid, ns_pid(pid, proc=proc), tuple(foreign))


def ns_pid(pid: int, *, proc: Path = Path("/proc")) -> int:
    """``pid`` as its PID namespace numbers it (the last ``NSpid`` field); ``pid`` if unknown."""
    try:
        text = (proc / str(pid) / "status").read_text()
    except OSError:
        return pid
    return parse_ns_pid(text) or pid


def parse_ns_pid(status: str) -> int | None:
    """The innermost PID from the text of ``/proc/PID/status``.

    >>> parse_ns_pid("Name:\\tpython\\nNSpid:\\t31337\\t7\\n")
    7
    >>> parse_ns_pid("Name:\\tpython\\nNSpid:\\t4242\\n")
    4242
    >>> parse_ns_pid("Name:\\tpython\\n") is None
    True
    """
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            fields = line.split()[1:]
            return int(fields[-1]) if fields else None
    return None


def nsenter() -> str:
    """The nsenter binary (util-linux); :class:`ToolMissingError` when there is none."""
    found = shutil.which("nsenter")
    if found is None:
        raise ToolMissingError(
            "reaching a worker in a container needs nsenter, which is not on PATH",
            hint="install util-linux (apt install util-linux / dnf install util-linux)",
        )
    return found


def target_environ(pid: int) -> dict[str, str]:
    """The worker's environment, as its ``/proc/PID/environ`` shows it (empty if unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def inside_env(pid: int) -> dict[str, str]:
    """The environment for a command run in the worker's namespaces: its PATH and PYTHONPATH.

    Ours would be wrong there: our PATH names our directories, our
    PYTHONPATH our packages.
    """
    theirs = target_environ(pid)
    env = {"PATH": theirs.get("PATH") or DEFAULT_PATH, "LANG": theirs.get("LANG", "C.UTF-8")}
    for name in ("PYTHONPATH", "HOME", "VIRTUAL_ENV"):
        if theirs.get(name):
            env[name] = theirs[name]
    return env


def find_inside(space: Namespaces, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` on the worker's own PATH, in its filesystem; its path there."""
    path = target_environ(space.pid).get("PATH") or DEFAULT_PATH
    for name in names:
        for directory in path.split(":"):
            if not directory.startswith("/"):
                continue
            candidate = f"{directory.rstrip('/')}/{name}"
            host = space.host_path(candidate)
            if host.is_file() and os.access(host, os.X_OK):
                return candidate
    return None


def visible_inside(space: Namespaces, path: str) -> bool:
    """Whether ``path`` of our filesystem is the very same file or folder in the worker's."""
    if not space.other_filesystem:
        return True
    try:
        ours = os.stat(path)
        theirs = os.stat(space.host_path(path))
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)


def scratch_dir(space: Namespaces, uid: int, gid: int) -> PurePosixPath:
    """A folder of the worker's filesystem its user can write a capture into; made if needed.

    ``/tmp/profiler-captures`` first, then ``/dev/shm/profiler-captures``,
    ``/var/tmp/profiler-captures``; a read-only mount is skipped. Raises
    :class:`AttachError` with the fix when none is writable.
    """
    tried = []
    for candidate in SCRATCH_CANDIDATES:
        base = space.host_path(candidate)
        if not base.is_dir():
            continue
        if is_read_only(base):
            tried.append(f"{candidate} (read-only)")
            continue
        folder = PurePosixPath(candidate) / SCRATCH_NAME
        host = space.host_path(folder)
        try:
            host.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(host, uid, gid)
            info = host.stat()
        except OSError as exc:
            tried.append(f"{candidate} ({exc.strerror})")
            continue
        if uid == 0 or (info.st_uid == uid and info.st_mode & stat.S_IWUSR):
            return folder
        tried.append(f"{candidate} (not writable by uid {uid})")
    raise AttachError(
        f"PID {space.pid} has no writable folder for its capture in its own filesystem "
        f"(tried {', '.join(tried) or ', '.join(SCRATCH_CANDIDATES)})",
        hint=READ_ONLY_HINT,
    )


def is_read_only(path: Path) -> bool:
    """True when ``path`` is on a read-only mount (``docker run --read-only``, readOnlyRootFs)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def fetch(space: Namespaces, inside: str | PurePosixPath | Path, destination: Path) -> bool:
    """Copy a file the worker wrote in its filesystem to ``destination``; True when copied.

    Read through ``/proc/PID/root``: the worker must still be alive. The copy
    in the worker's filesystem is removed once fetched.
    """
    source = space.host_path(inside)
    if source == destination:
        return destination.exists()
    try:
        shutil.copyfile(source, destination)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        source.unlink()
    return True
