"""What works on this host and what is missing, each with its fix.

Every capability later commands need is checked the way they will use it:
py-spy by dumping a Python process it did not start, PostgreSQL by connecting
with the user's DSN and asking what that role may see.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from profiler.capture import pyspy
from profiler.capture.debugger_probe import probe_call
from profiler.capture.ptrace import read_access
from profiler.capture.tools import DEBUGGERS, find_debugger, find_tool
from profiler.errors import ExitCode, ProfilerError, error_class
from profiler.model import Check, CheckStatus, RolePrivileges


def diagnose(dsn: str | None) -> list[Check]:
    """Run every check; never raises for what it finds, only reports it."""
    return [
        _check_pyspy(),
        _check_memray(),
        _check_debugger(),
        _check_ptrace(),
        *_check_postgres(dsn),
    ]


def verdict(checks: list[Check]) -> ProfilerError | None:
    """The error to end with when a required check failed: the first one's code and fix."""
    blocking = [check for check in checks if check.blocking]
    if not blocking:
        return None
    first = blocking[0]
    return error_class(first.exit_code)(
        f"{len(blocking)} required check(s) failed; first: {first.name}: {first.detail}",
        hint=first.fix or "see the table above",
    )


def _check_pyspy() -> Check:
    path = find_tool("py-spy")
    if path is None or not path.is_file():
        where = f"at {path}" if path is not None else "beside this Python nor on PATH"
        return Check(
            "py-spy",
            CheckStatus.FAIL,
            f"py-spy not found {where}",
            fix="pip install py-spy",
            exit_code=ExitCode.TOOL_MISSING,
        )
    ok, said = pyspy.can_read_a_python_process(path)
    return Check(
        "py-spy",
        CheckStatus.OK if ok else CheckStatus.FAIL,
        f"{pyspy.version(path)} at {path}: {said}",
        fix="" if ok else "allow ptrace (see the ptrace row) or run as the workers' user",
        exit_code=ExitCode.CANNOT_ATTACH,
    )


def _check_memray() -> Check:
    if importlib.util.find_spec("memray") is None:
        return Check(
            "memray",
            CheckStatus.FAIL,
            "memray is not importable by this Python",
            fix="pip install memray",
            exit_code=ExitCode.TOOL_MISSING,
        )
    return Check(
        "memray",
        CheckStatus.OK,
        f"memray {importlib.metadata.version('memray')} importable here; "
        "each worker's own interpreter is checked at attach time",
    )


def _check_debugger() -> Check:
    path = find_debugger()
    if path is None:
        return Check(
            "debugger",
            CheckStatus.FAIL,
            f"none of {', '.join(DEBUGGERS)} found: memray cannot attach to a live worker",
            fix="apt-get install gdb (or install lldb)",
            exit_code=ExitCode.TOOL_MISSING,
        )
    if not read_access().can_attach_any_own_process:
        return Check("debugger", CheckStatus.OK, f"{path.name} at {path} (memray attach)")
    probe = probe_call(path)  # ptrace allowed: try the inferior call memray's attach makes
    if not probe.ok:
        return Check(
            "debugger",
            CheckStatus.FAIL,
            probe.detail,
            fix=probe.fix or "check the debugger works: gdb -p PID -batch -ex 'call (int)getpid()'",
            exit_code=ExitCode.TOOL_MISSING,
        )
    return Check("debugger", CheckStatus.OK, f"{path.name} at {path}: {probe.detail}")


def _check_ptrace() -> Check:
    access = read_access()
    if access.can_attach_any_own_process:
        return Check("ptrace", CheckStatus.OK, f"allowed ({access.explain()})")
    if access.yama_scope == 1:
        return Check(
            "ptrace",
            CheckStatus.FAIL,
            f"only children can be traced ({access.explain()})",
            fix="sudo sysctl kernel.yama.ptrace_scope=0, or run profiler with CAP_SYS_PTRACE",
            exit_code=ExitCode.CANNOT_ATTACH,
        )
    return Check(
        "ptrace",
        CheckStatus.FAIL,
        f"denied ({access.explain()})",
        fix="grant CAP_SYS_PTRACE (containers: --cap-add=SYS_PTRACE); "
        "scope 3 needs a reboot to lower",
        exit_code=ExitCode.CANNOT_ATTACH,
    )


def _check_postgres(dsn: str | None) -> list[Check]:
    if dsn is None:
        return [
            Check(
                "postgresql",
                CheckStatus.SKIPPED,
                "no DSN given",
                fix="pass --dsn, or set PROFILER_DSN or DATABASE_URL",
                required=False,
            )
        ]
    # Imported here: psycopg is only needed when a DSN is given.
    from profiler.pg.connect import connection
    from profiler.pg.dsn import redact
    from profiler.pg.privileges import role_privileges

    try:
        with connection(dsn) as conn:
            role = role_privileges(conn)
    except ProfilerError as exc:
        return [
            Check(
                "postgresql",
                CheckStatus.FAIL,
                exc.message,
                fix=exc.hint or "",
                exit_code=ExitCode.POSTGRES,
            )
        ]
    return [
        Check(
            "postgresql",
            CheckStatus.OK,
            f"PostgreSQL {role.server_version} at {redact(dsn)} as {role.role_name}",
        ),
        _check_monitor_role(role),
    ]


def _check_monitor_role(role: RolePrivileges) -> Check:
    if role.sees_all_queries:
        how = "superuser" if role.is_superuser else "member of pg_read_all_stats"
        return Check("pg_monitor", CheckStatus.OK, f"{role.role_name} sees every session ({how})")
    return Check(
        "pg_monitor",
        CheckStatus.WARN,
        f"{role.role_name} sees other roles' sessions as <insufficient privilege>: "
        "their state, ages and query are hidden; its own sessions stay visible",
        fix=f"GRANT pg_monitor TO {role.role_name};",
        required=False,
        exit_code=ExitCode.POSTGRES,
    )
