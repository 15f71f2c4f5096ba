"""Whether this process may ptrace others: Yama's scope and CAP_SYS_PTRACE.

py-spy reads a target's memory and memray injects into it; both need ptrace.
The kernel's answer depends on ``kernel.yama.ptrace_scope`` (absent when Yama is
not built in) and on the capability, which containers drop by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from profiler.errors import AttachError

PTRACE_HINT = (
    "run as root or as the target's user with CAP_SYS_PTRACE "
    "(containers: --cap-add SYS_PTRACE), or lower kernel.yama.ptrace_scope to 0 "
    "(sysctl kernel.yama.ptrace_scope=0)"
)
YAMA_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
CAP_SYS_PTRACE = 19
CAP_ADD_HINT = (
    "grant CAP_SYS_PTRACE: docker/podman run --cap-add SYS_PTRACE; Kubernetes: "
    'securityContext.capabilities.add: ["SYS_PTRACE"], or a debug container: '
    "kubectl debug -it POD --image=IMAGE --target=CONTAINER --profile=general"
)
SECCOMP_HINT = (
    "the seccomp profile denies ptrace despite CAP_SYS_PTRACE: docker/podman run "
    "--security-opt seccomp=unconfined; Kubernetes: securityContext.seccompProfile.type: "
    "Unconfined (or a profile that allows ptrace and process_vm_readv)"
)
# Markers of running inside a container, as the engines leave them.
_CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))
_CONTAINER_CGROUP = ("docker", "kubepods", "libpod", "containerd", "crio")


@dataclass(frozen=True, slots=True)
class PtraceAccess:
    yama_scope: int | None  # None: Yama not present, classic ptrace rules
    has_cap_sys_ptrace: bool
    is_root: bool
    seccomp: int = 0  # 0 off, 1 strict, 2 filter (Docker's and Kubernetes' default profiles)
    in_container: bool = False  # we run inside a container: the inside strategy

    def hint(self) -> str:
        """The fix for "ptrace denied", specific to where we run.

        >>> PtraceAccess(1, False, True, 2, True).hint().startswith("grant CAP_SYS_PTRACE")
        True
        >>> PtraceAccess(1, True, True, 2, True).hint().startswith("the seccomp profile")
        True
        """
        if self.in_container and not self.has_cap_sys_ptrace:
            return CAP_ADD_HINT
        if self.in_container and self.seccomp == 2:
            return SECCOMP_HINT
        return PTRACE_HINT

    @property
    def can_attach_any_own_process(self) -> bool:
        """True when a process of the same user that is not our child can be attached."""
        if self.yama_scope is None or self.yama_scope == 0:
            return True
        if self.yama_scope in (1, 2):
            return self.has_cap_sys_ptrace
        return False  # 3: ptrace disabled until reboot

    def explain(self) -> str:
        scope = "no Yama LSM" if self.yama_scope is None else f"yama ptrace_scope={self.yama_scope}"
        cap = "CAP_SYS_PTRACE" if self.has_cap_sys_ptrace else "no CAP_SYS_PTRACE"
        return f"{scope}, {cap}"


def read_access(
    scope_file: Path = YAMA_SCOPE, status_file: Path = Path("/proc/self/status")
) -> PtraceAccess:
    try:
        scope: int | None = int(scope_file.read_text().strip())
    except FileNotFoundError:
        scope = None
    cap_eff = 0
    uid = -1
    seccomp = 0
    for line in status_file.read_text().splitlines():
        if line.startswith("CapEff:"):
            cap_eff = int(line.split()[1], 16)
        elif line.startswith("Uid:"):
            uid = int(line.split()[2])  # effective uid
        elif line.startswith("Seccomp:"):
            seccomp = int(line.split()[1])
    return PtraceAccess(
        yama_scope=scope,
        has_cap_sys_ptrace=bool(cap_eff >> CAP_SYS_PTRACE & 1),
        is_root=uid == 0,
        seccomp=seccomp,
        in_container=in_container(),
    )


def require_ptrace(pid: int) -> None:
    """Raise :class:`AttachError` (exit 3), with the fix for where we run, unless this
    process may ptrace ``pid`` (Yama's scope and CAP_SYS_PTRACE allow it, or we are root)."""
    access = read_access()
    if not access.can_attach_any_own_process and not access.is_root:
        raise AttachError(
            f"ptrace is not allowed here ({access.explain()}): cannot attach to PID {pid}",
            hint=access.hint(),
        )


def in_container(cgroup_file: Path = Path("/proc/1/cgroup")) -> bool:
    """Whether this process runs inside a Docker, Podman or Kubernetes container."""
    if any(marker.exists() for marker in _CONTAINER_MARKERS):
        return True
    try:
        text = cgroup_file.read_text()
    except OSError:
        return False
    return any(word in text for word in _CONTAINER_CGROUP)


def denied(pid: int, access: PtraceAccess, said: str) -> tuple[str, str]:
    """Message and fix for a ptrace attach that failed with EPERM, from what we know of here.

    With CAP_SYS_PTRACE and a seccomp filter, the filter is the cause (Docker's
    default profile allowed ptrace only from kernel 4.8 on, and custom profiles
    often drop it); without the capability in a container, the capability.

    >>> denied(7, PtraceAccess(1, True, True, 2, True), "Operation not permitted")[0]
    'ptrace of PID 7 denied by seccomp (yama ptrace_scope=1, CAP_SYS_PTRACE, seccomp filter): \
Operation not permitted'
    """
    facts = access.explain() + (", seccomp filter" if access.seccomp == 2 else "")
    if access.has_cap_sys_ptrace and access.seccomp == 2 and access.in_container:
        return f"ptrace of PID {pid} denied by seccomp ({facts}): {said}", SECCOMP_HINT
    if access.in_container and not access.has_cap_sys_ptrace:
        return f"ptrace of PID {pid} denied: this container lacks CAP_SYS_PTRACE: {said}", (
            CAP_ADD_HINT
        )
    return f"ptrace of PID {pid} denied ({facts}): {said}", PTRACE_HINT
