"""The MkDocs site: it builds strictly, its CLI reference is complete, its commands are real.

Command lines shown in the docs are checked against the click group typer
builds, so a renamed command or option breaks this test, not a reader.

Which lines are checked: fenced blocks tagged ``bash``, ``console``, ``sh`` or
``shell`` in ``docs/**/*.md`` (published findings and generated pages
excluded). Backslash continuations are joined and a leading ``$ `` prompt is
stripped. A line is split on ``|``, ``&&``, ``||``, ``;`` and ``&`` (outside
quotes) and every piece whose first word is ``profiler`` (or
``.venv/bin/profiler``, optionally after ``sudo``) is checked: the command
path must exist, and every ``--option``/``-o`` must exist on that command.
Pieces containing a command substitution (``$(``, backticks) *inside* the
profiler call are skipped, since their words cannot be resolved; substitutions
elsewhere on the line (``MASTER="$(profiler ...)"``) are checked as their own
command, the text inside ``$(...)``. Quoted words and ``$VARIABLES`` are
accepted as values; synopsis lines are checked too (``[--cpu/--no-cpu]``
names two options, ``[TARGET]`` is a value).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOK = DOCS / "hooks" / "cli_reference.py"
SHELL_FENCES = {"bash", "console", "sh", "shell"}
SKIPPED_DIRS = {"findings", "hooks"}  # published reports are generated, not written


@functools.cache
def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cli_reference"] = module
    spec.loader.exec_module(module)
    return module


# -- (a) the build ---------------------------------------------------------------------------


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    # GIVEN the repository's mkdocs.yml
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # WHEN the site is built with --strict (warnings, broken links and anchors fail it)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    # THEN it succeeds and the generated CLI reference is in it
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert 'id="profiler-session-run"' in page
    # AND search keeps an option as typed (not "py", "spy", "idle") and finds the CPU guide
    terms, pages = _search(tmp_path / "site", "py-spy --idle")
    assert terms == {"py-spy", "--idle"}
    assert "guide/cpu-profiling/" in pages


def _search(site: Path, query: str) -> tuple[set[str], set[str]]:
    """The query's terms, and the pages whose text holds them all, split as Material's search
    splits both the index and the query (its ``separator``, from the built index's config)."""
    index = json.loads((site / "search" / "search_index.json").read_text())
    separator = re.compile(index["config"]["separator"])
    terms = {term.lower() for term in separator.split(query) if term}
    found: set[str] = set()
    for doc in index["docs"]:
        words = {w.lower() for w in separator.split(re.sub(r"<[^>]+>", " ", doc["text"])) if w}
        if terms <= words:
            found.add(doc["location"].split("#")[0])
    return terms, found


def test_mkdocs_yml_is_plain_yaml_with_findings_last() -> None:
    # GIVEN mkdocs.yml, which `profiler publish` rewrites with a plain YAML loader
    text = (ROOT / "mkdocs.yml").read_text()
    # WHEN it is loaded without any Python tags
    yaml = importlib.import_module("yaml")  # PyYAML comes with mkdocs; no stubs needed
    config = yaml.safe_load(text)
    # THEN the Findings section is the last nav entry, its index first (publish appends after it)
    assert list(config["nav"][-1]) == ["Findings"]
    assert config["nav"][-1]["Findings"][0] == "findings/index.md"
    assert "<!-- findings-index -->" in (DOCS / "findings" / "index.md").read_text()
    assert config["hooks"] == ["docs/hooks/cli_reference.py"]


# -- (b) the generated reference is complete -------------------------------------------------


def test_cli_reference_lists_every_command_and_option() -> None:
    # GIVEN the hook and the CLI's click group
    hook = _hook()
    docs = list(hook.walk())
    # WHEN the reference is rendered
    page = hook.render_reference()
    # THEN every command has its section, and every visible option of it is listed
    assert len(docs) > 10
    for doc in docs:
        assert f"`{doc.name}` {{ #{doc.anchor} }}" in page, doc.name
        section = page.split(f"{{ #{doc.anchor} }}", 1)[1]
        for param in doc.command.params:
            if param.param_type_name == "option" and not getattr(param, "hidden", False):
                for name in param.opts:
                    assert f"`{name}`" in section, f"{doc.name} {name}"
    names = {doc.name for doc in docs}
    assert {"profiler session run", "profiler db check", "profiler mem report"} <= names


def test_cli_reference_picks_up_new_commands() -> None:
    # GIVEN a typer app with a command the docs have never heard of
    import typer
    import typer.main

    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Root."""

    sub = typer.Typer(help="A group added later.")

    @sub.command()
    def later(
        limit: int = typer.Option(3, "--limit", "-l", help="How many."),
    ) -> None:
        """Example: profiler later --limit 2"""

    app.add_typer(sub, name="group")
    # WHEN the reference is rendered from it
    page = _hook().render_reference(typer.main.get_command(app))
    # THEN the new command, its usage and its option appear
    assert "`profiler group later` { #profiler-group-later }" in page
    assert "profiler group later [OPTIONS]" in page
    assert "| `--limit` / `-l` | int | 3 | How many. |" in page


# -- (c) every command line in the docs is real ----------------------------------------------


def _markdown_files() -> Iterator[Path]:
    for path in sorted(DOCS.rglob("*.md")):
        if not SKIPPED_DIRS & set(path.relative_to(DOCS).parts[:-1]):
            yield path


def _shell_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, command line) of every shell fence, continuations joined."""
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if fence is None:
            match = re.match(r"^(`{3,}|~{3,})\s*([\w-]*)", stripped)
            if match:
                fence = (
                    match.group(1) if match.group(2) in SHELL_FENCES else f"skip{match.group(1)}"
                )
            continue
        if stripped.startswith(fence.removeprefix("skip")) and set(stripped) <= set("`~"):
            fence = None
            continue
        if fence.startswith("skip"):
            continue
        line = stripped.removeprefix("$ ")
        start, text = pending if pending else (number, "")
        text = f"{text} {line}".strip()
        if text.endswith("\\"):
            pending = (start, text[:-1])
            continue
        pending = None
        if text and not text.startswith("#"):
            yield start, text


def _substitutions(line: str) -> list[str]:
    """The commands inside ``$(...)`` (not nested), checked on their own."""
    return re.findall(r"\$\(([^()]*)\)", line)


def _pieces(line: str) -> Iterator[list[str]]:
    """Each simple command of a line, as words; pipes, lists and ``&`` split it."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    try:
        for token in lexer:
            if token and set(token) <= set("|&;"):
                if words:
                    yield words
                words = []
            else:
                words.append(token)
    except ValueError:  # unbalanced quotes: report the line as it is
        yield line.split()
        return
    if words:
        yield words


def _profiler_args(words: list[str]) -> list[str] | None:
    while words and (words[0] == "sudo" or re.match(r"^[A-Z_]+=", words[0])):
        words = words[1:]
    if words and Path(words[0]).name == "profiler":
        return words[1:]
    return None


def _check(root: Any, args: list[str]) -> str | None:
    """None when ``profiler ARGS`` names a real command and real options, else why not."""
    command = root
    path = ["profiler"]
    rest = list(args)
    while True:
        options = _options(command)
        while rest and rest[0].startswith("-"):
            word = rest.pop(0)
            name = word.split("=", 1)[0]
            if name not in options:
                return f"{' '.join(path)}: no option {name}"
            takes = options[name]
            if "=" not in word:
                del rest[:takes]
        children = getattr(command, "commands", None)
        if not children:
            break
        if not rest:
            return None
        if rest[0] not in children:
            return f"{' '.join(path)}: no command {rest[0]!r}"
        path.append(rest[0])
        command = children[rest.pop(0)]
    for word in rest:
        for name in _option_words(word):
            if name not in _options(command):
                return f"{' '.join(path)}: no option {name}"
    return None


def _option_words(word: str) -> list[str]:
    """Option names in a word, synopsis brackets included: ``[--cpu/--no-cpu]`` gives both."""
    bare = word.lstrip("[").rstrip(".]").split("=", 1)[0]
    return [part for part in bare.split("/") if re.match(r"^--?[A-Za-z]", part)]


def _options(command: Any) -> dict[str, int]:
    """Every option spelling of a command, with how many values it takes."""
    names = {"--help": 0, "-h": 0}
    for param in command.params:
        if param.param_type_name != "option":
            continue
        takes = 0 if (getattr(param, "is_flag", False) or getattr(param, "count", False)) else 1
        takes = param.nargs if takes and param.nargs > 1 else takes
        for name in [*param.opts, *getattr(param, "secondary_opts", [])]:
            names[name] = takes
    return names


def _doc_commands() -> Iterator[tuple[str, list[str]]]:
    for path in _markdown_files():
        for number, line in _shell_lines(path):
            where = f"{path.relative_to(ROOT)}:{number}"
            for text in [line, *_substitutions(line)]:
                outer = re.sub(r"\$\([^()]*\)", "SUBST", text) if text is line else text
                for words in _pieces(outer):
                    args = _profiler_args(words)
                    if args is None:
                        continue
                    if any("SUBST" in w and w.startswith("-") for w in args) or "`" in text:
                        continue  # an option built by substitution cannot be resolved
                    yield where, args


def test_doc_command_lines_name_real_commands_and_options() -> None:
    # GIVEN the CLI and every profiler command line in the docs' shell blocks
    root = _hook().root_command()
    found = list(_doc_commands())
    # WHEN each one is resolved against the click group
    failures = [
        f"{where}: profiler {shlex.join(args)}: {why}"
        for where, args in found
        if (why := _check(root, args))
    ]
    # THEN every command path and option exists
    assert len(found) > 40, found
    assert not failures, "\n".join(failures)


def test_the_doc_command_checker_catches_mistakes() -> None:
    # GIVEN the CLI
    root = _hook().root_command()
    # THEN real lines pass and invented commands or options are reported
    assert _check(root, ["session", "run", "--pid", "1", "-d", "30", "-o", "x"]) is None
    assert _check(root, ["-v", "db", "check", "--max-idle-in-tx-age", "5", "--json"]) is None
    assert _check(root, ["session", "run", "--kube-node", "web"]) is not None
    assert _check(root, ["sesion", "show", "x"]) is not None
    assert _check(root, ["db", "check", "--max-age=5"]) is not None
    # AND shell syntax around the command is understood
    pieces = list(_pieces('profiler db snapshot --json | jq ".x" && profiler lab down &'))
    assert [_profiler_args(p) for p in pieces] == [
        ["db", "snapshot", "--json"],
        None,
        ["lab", "down"],
    ]


# -- (d) install lines name our distribution -------------------------------------------------


def _install_targets(text: str) -> Iterator[str]:
    """The requirement after each ``pip install`` (options skipped) when it names this project.

    Only the first one: prose may follow (``pip install py-spy (it is a dependency
    of profiler)``, ``pip install gdb-for-pwndbg beside profiler``).
    """
    for match in re.finditer(r"pip install ([^`\n]*)", text):
        words = [w.strip("'\"") for w in match.group(1).split() if not w.startswith("-")]
        if words and re.match(r"^profiler\b", words[0]):
            yield words[0]


def test_install_lines_name_our_distribution_not_pypis_profiler() -> None:
    # GIVEN the distribution name in pyproject.toml ("profiler" on PyPI is another author's)
    project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1]
    name = re.search(r'^name = "([^"]+)"', project, re.MULTILINE).group(1)  # no tomllib on 3.10
    assert name != "profiler"
    # WHEN every `pip install profiler...` in the README, the docs and our hints is read
    sources = [ROOT / "README.md", *_markdown_files(), *sorted((ROOT / "profiler").rglob("*.py"))]
    found = [
        (path.relative_to(ROOT), target)
        for path in sources
        for target in _install_targets(path.read_text())
    ]
    # THEN each installs our distribution, extras allowed
    assert len(found) >= 5, found
    wrong = [(str(p), t) for p, t in found if t.split("[", 1)[0] != name]
    assert not wrong, wrong
    # AND the checker would catch the old line, and only names what is installed
    assert list(_install_targets("run `pip install profiler` first")) == ["profiler"]
    assert list(_install_targets("pip install -q 'profiler[lab]'")) == ["profiler[lab]"]
    assert list(_install_targets("pip install gdb-for-pwndbg beside profiler")) == []
