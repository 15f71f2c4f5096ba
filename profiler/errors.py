"""Errors that end a command, each carrying its exit code and a next step.

Library code raises these; only ``profiler.cli.main.main`` turns them into one
red line on stderr plus a "next step" line, so exit codes are decided where the
failure is understood, not at the boundary.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """The exit codes of ``../shared/CLI.md``; scripts and CI rely on them."""

    OK = 0
    VIOLATIONS = 1
    USAGE = 2
    CANNOT_ATTACH = 3
    POSTGRES = 4
    TOOL_MISSING = 5
    INTERRUPTED = 6
    BAD_INPUT = 7
    INTERNAL = 70


class ProfilerError(Exception):
    """A failure the user can act on: a one-line message and a next step."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# One class per kind of failure, alike on purpose: each only names its exit code, so a
# caller raises the kind and the code follows.
class UsageError(ProfilerError):
    """A bad option or value, or a command that makes no sense in this state."""

    exit_code = ExitCode.USAGE


class AttachError(ProfilerError):
    """A target cannot be attached to (no such process, ptrace denied, ...)."""

    exit_code = ExitCode.CANNOT_ATTACH


class PostgresError(ProfilerError):
    """PostgreSQL unreachable, authentication failed, or privilege missing."""

    exit_code = ExitCode.POSTGRES


class ToolMissingError(ProfilerError):
    """A required external tool (py-spy, memray, gdb, ...) is not installed."""

    exit_code = ExitCode.TOOL_MISSING


class InterruptedCapture(ProfilerError):
    """A capture was stopped by Ctrl-C or SIGTERM; what was captured is kept."""

    exit_code = ExitCode.INTERRUPTED


class InputError(ProfilerError):
    """An input file (capture, session, report) is unreadable or corrupt."""

    exit_code = ExitCode.BAD_INPUT


class UnsupportedHost(ProfilerError):
    """This host lacks a kernel facility the command needs (a writable memory cgroup for
    ``lab up --memory-limit``): nothing to install, another host or more privilege. It
    exits as a missing tool does (5, CLI.md's table): what the command needs is not here."""

    exit_code = ExitCode.TOOL_MISSING


class ChecksFailed(ProfilerError):
    """A check ran and found violations; its own output already said which."""

    exit_code = ExitCode.VIOLATIONS


def error_class(code: ExitCode) -> type[ProfilerError]:
    """The error class that ends a command with ``code``, for checks that report codes."""
    for cls in ProfilerError.__subclasses__():
        if cls.exit_code == code:
            return cls
    return ProfilerError
