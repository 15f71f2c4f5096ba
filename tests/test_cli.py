from __future__ import annotations

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


def test_every_command_has_an_example_in_its_help(run_cli) -> None:
    commands = [
        ["doctor"],
        ["workers"],
        ["cpu", "dump"],
        ["db", "snapshot"],
        ["db", "watch"],
        ["db", "check"],
        ["lab", "up"],
        ["lab", "down"],
        ["lab", "status"],
        ["lab", "load"],
    ]
    for command in commands:
        result = run_cli(*command, "--help")
        assert result.exit_code == 0, result.output
        assert "Example: profiler" in result.stdout, command
