"""The root command and the one error boundary.

Every ``ProfilerError`` raised anywhere below ends here as one red line and a
"next step" line on stderr, with the exit code the error carries. Tracebacks
only with ``-vv``, and never with locals: DSNs carry passwords.
"""

from __future__ import annotations

import sys
import traceback

import typer
import typer.exceptions

from profiler import __version__
from profiler.cli import (
    console,
    cpu,
    db,
    demo,
    doctor,
    lab,
    lint,
    mem,
    publish,
    report,
    session,
    watch,
    workers,
)
from profiler.errors import ExitCode, ProfilerError

app = typer.Typer(
    name="profiler",
    help="Profile a Python gateway's workers (py-spy, memray) against PostgreSQL activity.\n\n"
    "Example: profiler doctor --dsn postgresql://app@127.0.0.1/app",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)
app.command(name="doctor")(doctor.doctor)
app.command(name="workers")(workers.workers)
app.command(name="publish")(publish.publish)
app.command(name="report")(report.report)
app.command(name="demo")(demo.demo)
app.command(name="lint")(lint.lint)
app.command(name="watch")(watch.watch)
app.add_typer(cpu.app, name="cpu")
app.add_typer(mem.app, name="mem")
app.add_typer(db.app, name="db")
app.add_typer(session.app, name="session")
app.add_typer(lab.app, name="lab")


def _show_version(value: bool) -> None:
    if value:
        console.out.print(f"profiler {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More detail; -vv adds tracebacks."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only data and errors."),
) -> None:
    """Profile a Python gateway's workers (py-spy, memray) against PostgreSQL activity.

    Example: profiler doctor --dsn postgresql://app@127.0.0.1/app
    """
    console.set_verbosity(-1 if quiet else verbose)


TYPER_INTERRUPTED = 130


def _fail(code: int, message: str, hint: str | None) -> int:
    console.err.print(f"[bold red]error:[/bold red] {message}", markup=True, highlight=False)
    if hint:
        console.err.print(f"[dim]next:[/dim] {hint}", highlight=False)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code instead of raising."""
    _no_core_files()
    try:
        result = app(args=argv, prog_name="profiler", standalone_mode=False)
    except ProfilerError as exc:
        if console.verbosity >= 2:
            traceback.print_exc()
        return _fail(exc.exit_code, exc.message, exc.hint)
    except (typer.Abort, KeyboardInterrupt):
        return _fail(ExitCode.INTERRUPTED, "interrupted", None)
    except typer.exceptions.TyperException as exc:
        # typer's own click: usage errors (exit 2) and the like, shown as click shows them.
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", ExitCode.USAGE))
    except Exception as exc:
        if console.verbosity >= 2:
            traceback.print_exc()
        return _fail(
            ExitCode.INTERNAL,
            f"internal error: {type(exc).__name__}: {exc}",
            "run again with -vv for the traceback and report it",
        )
    if result == TYPER_INTERRUPTED:  # typer turns an uncaught Ctrl-C into a silent 130
        return _fail(ExitCode.INTERRUPTED, "interrupted", None)
    return int(result) if isinstance(result, int) else 0


def _no_core_files() -> None:
    """No core dumps from us or the debuggers we start (inherited limit).

    gdb, run by memray's injector, can crash when its target exits during the
    attach, and the kernel's default ``core`` pattern would leave a core file
    of gdb in the user's working directory.
    """
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


if __name__ == "__main__":
    sys.exit(main())
