"""Whether this process may ptrace others: Yama's scope and CAP_SYS_PTRACE.

py-spy reads a target's memory and memray injects into it; both need ptrace.
The kernel's answer depends on ``kernel.yama.ptrace_scope`` (absent when Yama is
not built in) and on the capability, which containers drop by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PTRACE_HINT = (
    "run as root or as the target's user with CAP_SYS_PTRACE "
    "(containers: --cap-add SYS_PTRACE), or lower kernel.yama.ptrace_scope to 0 "
    "(sysctl kernel.yama.ptrace_scope=0)"
)
YAMA_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
CAP_SYS_PTRACE = 19


@dataclass(frozen=True, slots=True)
class PtraceAccess:
    yama_scope: int | None  # None: Yama not present, classic ptrace rules
    has_cap_sys_ptrace: bool
    is_root: bool

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
    for line in status_file.read_text().splitlines():
        if line.startswith("CapEff:"):
            cap_eff = int(line.split()[1], 16)
        elif line.startswith("Uid:"):
            uid = int(line.split()[2])  # effective uid
    return PtraceAccess(
        yama_scope=scope,
        has_cap_sys_ptrace=bool(cap_eff >> CAP_SYS_PTRACE & 1),
        is_root=uid == 0,
    )
