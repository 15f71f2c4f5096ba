"""Typed records that cross module boundaries.

Frozen, slotted dataclasses: cheap, hashable, and impossible to mutate behind a
reader's back. Dicts appear only at the edges (JSON output, templates).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from profiler.errors import ExitCode


class CheckStatus(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``profiler doctor``: what was checked, what was found, the fix.

    ``exit_code`` is the code the command ends with when this check fails and
    is required (for example 4 for PostgreSQL, 5 for a missing tool).
    """

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""
    required: bool = True
    exit_code: ExitCode = ExitCode.USAGE

    @property
    def blocking(self) -> bool:
        return self.required and self.status is CheckStatus.FAIL


@dataclass(frozen=True, slots=True)
class RolePrivileges:
    """What the connected role may see in ``pg_stat_activity``."""

    role_name: str
    is_superuser: bool
    can_read_all_stats: bool
    server_version_num: int
    server_version: str

    @property
    def sees_all_queries(self) -> bool:
        return self.is_superuser or self.can_read_all_stats
