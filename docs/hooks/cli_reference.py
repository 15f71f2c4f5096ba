"""MkDocs hook: the CLI reference, generated from the typer app at build time.

``reference/cli.md`` is never written to disk: :func:`on_files` adds it to the
build as a generated file, rendered by :func:`render_reference` from
``profiler.cli.main.app``. Every command and subcommand is walked
recursively, so a command registered later (``report``, ``publish``,
``demo``, ...) appears without touching this file.

Per command: its usage line, its help text, its arguments and its options
(names, type, default, help). Only click's public shape is relied on
(``params``, ``opts``, ``secondary_opts``, ``help``, ``commands``), with
typer's ``display_type_rich`` for the type when it exists.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

PAGE = "reference/cli.md"
PROGRAM = "profiler"

_MARKDOWN_SPECIALS = re.compile(r"([\\*_\[\]|])")


@dataclass(frozen=True, slots=True)
class CommandDoc:
    """One command of the tree: its path (``("profiler", "cpu", "dump")``) and its click object."""

    path: tuple[str, ...]
    command: Any
    context: Any

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def anchor(self) -> str:
        return "-".join(self.path)


def root_command() -> Any:
    """The click command typer builds from ``profiler.cli.main.app``."""
    import typer.main

    from profiler.cli.main import app

    return typer.main.get_command(app)


def walk(command: Any | None = None) -> Iterator[CommandDoc]:
    """Every command, depth first, parents before children, in registration order."""
    root = root_command() if command is None else command
    yield from _walk(root, (PROGRAM,), None)


def _walk(command: Any, path: tuple[str, ...], parent: Any) -> Iterator[CommandDoc]:
    context = command.context_class(command, info_name=path[-1], parent=parent)
    yield CommandDoc(path, command, context)
    for name, sub in subcommands(command).items():
        if not getattr(sub, "hidden", False):
            yield from _walk(sub, (*path, name), context)


def subcommands(command: Any) -> Mapping[str, Any]:
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, Mapping) else {}


def render_reference(command: Any | None = None) -> str:
    """The whole reference page, as Markdown."""
    docs = list(walk(command))
    lines = [
        "# CLI reference",
        "",
        "Generated from the code when the site is built "
        "(`docs/hooks/cli_reference.py` walks the typer app), so it always matches "
        "`profiler COMMAND --help`. Exit codes are listed in [Exit codes](exit-codes.md); "
        "the longer pages next to this one explain each command group.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    lines += [
        f"| [`{doc.name}`](#{doc.anchor}) | {_cell(_summary(doc.command))} |" for doc in docs[1:]
    ]
    lines.append("")
    for doc in docs:
        lines += render_command(doc)
    return "\n".join(lines).rstrip() + "\n"


def render_command(doc: CommandDoc) -> list[str]:
    level = "#" * min(max(len(doc.path), 2), 4)
    lines = [f"{level} `{doc.name}` {{ #{doc.anchor} }}", ""]
    lines += ["```text", usage(doc), "```", ""]
    lines += _help_paragraphs(getattr(doc.command, "help", None) or "")
    arguments = [p for p in doc.command.params if _kind(p) == "argument"]
    options = [p for p in doc.command.params if _kind(p) == "option" and not _hidden(p)]
    if arguments:
        lines += ["**Arguments**", "", "| argument | type | required | description |"]
        lines.append("|---|---|---|---|")
        for param in arguments:
            lines.append(
                f"| `{_argument_name(param)}` | {_cell(param_type(param, doc.context))} "
                f"| {'yes' if param.required else 'no'} | {_cell(_help(param))} |"
            )
        lines.append("")
    if options:
        lines += [
            "**Options**",
            "",
            "| option | type | default | description |",
            "|---|---|---|---|",
        ]
        for param in options:
            names = " / ".join(f"`{name}`" for name in option_names(param))
            lines.append(
                f"| {names} | {_cell(param_type(param, doc.context))} "
                f"| {_cell(default(param, doc.context))} | {_cell(_help(param))} |"
            )
        lines.append("")
    children = subcommands(doc.command)
    if children:
        lines += ["**Commands**", "", "| command | what it does |", "|---|---|"]
        for name, sub in children.items():
            if getattr(sub, "hidden", False):
                continue
            anchor = "-".join((*doc.path, name))
            lines.append(f"| [`{name}`](#{anchor}) | {_cell(_summary(sub))} |")
        lines.append("")
    return lines


def usage(doc: CommandDoc) -> str:
    """``profiler cpu record [OPTIONS]``; arguments upper case; ``COMMAND [ARGS]...`` for groups."""
    pieces = [doc.name]
    if any(_kind(p) == "option" and not _hidden(p) for p in doc.command.params):
        pieces.append("[OPTIONS]")
    for param in doc.command.params:
        if _kind(param) != "argument":
            continue
        name = _argument_name(param)
        name = name if param.required else f"[{name}]"
        pieces.append(f"{name}..." if param.nargs != 1 else name)
    if subcommands(doc.command):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def option_names(param: Any) -> list[str]:
    """Every spelling of an option, long names first: ``--duration``, ``-d``."""
    names = sorted(param.opts, key=lambda opt: (not opt.startswith("--"), opt))
    return names + list(getattr(param, "secondary_opts", []) or [])


def param_type(param: Any, context: Any) -> str:
    """``int``, ``float (>= 0.1)``, ``flag``, ``count``, ``int, repeatable``, ``path, one or more``.

    typer >= 0.22 describes its types itself (``display_type``); classic click has ``type.name``.
    """
    if getattr(param, "count", False):
        return "count"
    if getattr(param, "is_flag", False):
        return "flag"
    metavar = getattr(param, "metavar", None)
    if metavar and _kind(param) == "option":
        shown = str(metavar)
    elif hasattr(param, "display_type"):
        shown = str(param.display_type(context) or "").strip("<>")
    else:  # classic click
        shown = str(getattr(getattr(param, "type", None), "name", "") or "")
    if shown.startswith("list[") and shown.endswith("]"):
        shown = shown[len("list[") : -1]
    shown = shown.removesuffix(" range")
    if getattr(param, "multiple", False):
        shown += ", repeatable"
    elif getattr(param, "nargs", 1) == -1:
        shown += ", one or more"
    bounds = _range(param)
    return f"{shown} ({bounds})" if bounds else shown


def default(param: Any, context: Any) -> str:
    """The default as ``--help`` shows it; ``required`` for a required option."""
    if param.required:
        return "required"
    if getattr(param, "show_default", True) is False:
        return ""
    resilient = context.resilient_parsing
    context.resilient_parsing = True
    try:
        value = param.get_default(context, call=False)
    finally:
        context.resilient_parsing = resilient
    return _format_default(param, value)


def _format_default(param: Any, value: Any) -> str:
    if callable(value):
        shown = "(dynamic)"
    elif getattr(param, "is_flag", False) and getattr(param, "secondary_opts", None):
        shown = (param.opts if value else param.secondary_opts)[0]
    elif value is None or value is False or value in ((), []) or getattr(param, "count", False):
        shown = str(value) if value else ""
    elif isinstance(value, (list, tuple)):
        shown = ", ".join(str(v) for v in value)
    else:
        shown = getattr(value, "value", value)  # an Enum's value
    return str(shown)


def _range(param: Any) -> str:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if getattr(param, "count", False) or (low is None and high is None):
        return ""
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f">= {low}" if low is not None else f"<= {high}"


def _kind(param: Any) -> str:
    return str(getattr(param, "param_type_name", ""))


def _hidden(param: Any) -> bool:
    return bool(getattr(param, "hidden", False))


def _argument_name(param: Any) -> str:
    metavar = getattr(param, "metavar", None)
    return str(metavar or param.name).upper()


def _help(param: Any) -> str:
    return " ".join(str(getattr(param, "help", None) or "").split())


def _summary(command: Any) -> str:
    text = getattr(command, "short_help", None) or getattr(command, "help", None) or ""
    first = str(text).strip().split("\n\n", 1)[0]
    return " ".join(first.split())


def _help_paragraphs(text: str) -> list[str]:
    """Help text as Markdown: prose escaped, each ``Example:`` paragraph as a code block."""
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        if not paragraph.strip():
            continue
        if paragraph.lstrip().startswith("Example:"):
            body = paragraph.strip()[len("Example:") :].strip()
            lines += ["Example:", "", "```text", *body.splitlines(), "```", ""]
        else:
            lines += [_escape(" ".join(paragraph.split())), ""]
    return lines


def _escape(text: str) -> str:
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(text, quote=False))


def _cell(text: str) -> str:
    return _escape(text) if text else ""


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated ``reference/cli.md`` to the build (nothing is written to ``docs/``)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render_reference()))
    return files
