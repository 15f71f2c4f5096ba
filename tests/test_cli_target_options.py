"""``@target_options``: the eight target options declared once, a ready TargetSpec per command."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
import typer.main

from profiler.cli.options import target_options
from profiler.cli.workers import workers
from profiler.targets.discovery import TargetSpec
from tests.conftest import CliResult

TARGET_FLAGS = [
    "--pid",
    "--match",
    "--container",
    "--engine",
    "--pod",
    "--selector",
    "--namespace",
    "--context",
]
DECORATED = [["workers"], ["cpu", "dump"], ["cpu", "record"], ["mem", "attach"], ["session", "run"]]


@pytest.mark.parametrize("command", DECORATED, ids=" ".join)
def test_help_lists_the_target_options_in_order(
    run_cli: Callable[..., CliResult], command: list[str]
) -> None:
    # WHEN a decorated command's help is asked for
    result = run_cli(*command, "--help", env={"COLUMNS": "120"})
    # THEN the eight options are listed first, in their usual order, and the example is kept
    assert result.exit_code == 0, result.output
    lines = [line.strip("│ ") for line in result.stdout.splitlines()]
    option_lines = [line for line in lines if line.startswith("-")]
    assert [line.split()[0] for line in option_lines[:8]] == TARGET_FLAGS
    assert "Example: profiler" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["workers", "--pid", "1", "--container", "x"], "--pid names host PIDs"),
        (["cpu", "dump", "--namespace", "ns"], "--namespace and --context go with --pod"),
        (["cpu", "record", "--engine", "rkt", "--container", "x"], "unknown --engine 'rkt'"),
        (["mem", "attach", "--pod", "a", "--selector", "b"], "--pod and --selector both name"),
        (["session", "run", "--context", "c", "-o", "{tmp}"], "--namespace and --context go"),
    ],
)
def test_a_conflicting_target_is_a_usage_error(
    run_cli: Callable[..., CliResult], args: list[str], message: str, tmp_path: Path
) -> None:
    # WHEN target options that contradict each other are passed
    output = tmp_path / "session"
    args = [str(output) if arg == "{tmp}" else arg for arg in args]
    result = run_cli(*args, env={"PROFILER_DSN": "postgresql://nobody@127.0.0.1:1/x"})
    # THEN the command stops with the usage exit code and one error line, no traceback
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert message in errors[0]
    assert "Traceback" not in result.output
    assert not output.exists()


def test_namespace_without_pod_is_exactly_one_line(run_cli: Callable[..., CliResult]) -> None:
    result = run_cli("workers", "--namespace", "ns")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "error: --namespace and --context go with --pod or --selector"
    ]
    assert result.stdout == ""


def test_the_decorator_keeps_name_docstring_and_option_positions() -> None:
    # GIVEN a command with its target first and its own options after
    def probe(target: TargetSpec, label: str = typer.Option("x", "--label")) -> None:
        """Probe the targets.

        Example: profiler probe --pid 1
        """

    # WHEN it is decorated
    decorated = target_options(probe)
    # THEN name and help text are the command's; the target options stand where `target` stood
    assert decorated.__name__ == "probe"
    assert decorated.__doc__ == probe.__doc__
    names = list(inspect.signature(decorated).parameters)
    assert names == [flag.removeprefix("--") for flag in TARGET_FLAGS] + ["label"]
    assert "target" not in decorated.__annotations__
    assert workers.__doc__ is not None
    assert workers.__doc__.startswith("List gateway masters and workers")


def test_the_command_receives_a_ready_target_spec() -> None:
    # GIVEN a typer app whose command is decorated
    received: list[tuple[TargetSpec, str]] = []
    app = typer.Typer()

    @app.command()
    @target_options
    def probe(target: TargetSpec, label: str = typer.Option("x", "--label")) -> None:
        """Probe the targets."""
        received.append((target, label))

    # WHEN it runs with target options and its own
    typer.main.get_command(app).main(
        ["--pid", "7", "--pid", "8", "--match", "gunicorn", "--label", "y"],
        standalone_mode=False,
    )
    # THEN it gets the TargetSpec that target_spec() builds, and its own option untouched
    assert received == [(TargetSpec(pids=(7, 8), match="gunicorn"), "y")]


def test_a_command_without_a_target_parameter_is_refused() -> None:
    def no_target(label: str = "x") -> None:
        """Nothing to expand."""

    with pytest.raises(TypeError, match="no `target` parameter"):
        target_options(no_target)
