from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from profiler import __version__


def test_version(run_cli) -> None:
    result = run_cli("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"profiler {__version__}"


def test_help_lists_the_commands(run_cli) -> None:
    result = run_cli("--help")
    assert result.exit_code == 0, result.output
    for command in ("doctor", "workers", "cpu", "db", "lab"):
        assert command in result.stdout


def test_bad_option_is_a_usage_error_without_traceback(run_cli) -> None:
    result = run_cli("doctor", "--no-such-option")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "No such option" in result.stderr


def _command_tree() -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the typer app as click sees it (groups too), depth first."""
    import typer.main

    from profiler.cli.main import app

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not sub.hidden:
                yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


COMMANDS = _command_tree()


def test_the_tree_walk_finds_every_command() -> None:
    # The walk is the test's whole coverage: it must see nested and late-registered commands.
    paths = {path for path, _ in COMMANDS}
    assert {(), ("lint",), ("mem", "report"), ("session", "compare"), ("lab", "load")} <= paths
    leaves = [path for path, command in COMMANDS if not hasattr(command, "commands")]
    assert len(leaves) >= 22, leaves


@pytest.mark.parametrize(
    "path", [path for path, _ in COMMANDS], ids=lambda path: " ".join(path) or "profiler"
)
def test_every_command_has_an_example_in_its_help(path: tuple[str, ...]) -> None:
    from typer.testing import CliRunner

    from profiler.cli.main import app
    from tests.test_site import _check, _pieces, _profiler_args

    # GIVEN a command of the tree (a group or a leaf), and its help as users see it
    command = dict(COMMANDS)[path]
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="profiler")
    assert result.exit_code == 0, result.output
    # THEN the help shows an example
    assert "Example: profiler" in result.output, path
    # AND every command line in the example is this command (or below it) and resolves:
    # the command path and each option exist
    example = (command.help or "").split("Example:", 1)[1].split("\n\n", 1)[0]
    lines = [
        args
        for piece in _pieces(" ".join(example.split()))
        if (args := _profiler_args(piece)) is not None
    ]
    assert lines, example
    assert all(tuple(args[: len(path)]) == path for args in lines[:1]), (path, example)
    root = dict(COMMANDS)[()]
    for args in lines:
        assert _check(root, args) is None, (example, _check(root, args))
