"""gen-files script: the notebooks of ``notebooks/`` as site pages, with their outputs.

``mkdocs.yml`` runs this file through the ``gen-files`` plugin at every build.
Each ``notebooks/NN-name.ipynb`` becomes ``notebooks/NN-name.md`` (never
written to ``docs/``): converted by nbconvert's Markdown exporter, its figures
generated beside it. The notebooks are committed without outputs, so they are
executed here first, on a kernel of this interpreter, against the recorded
sessions in ``tests/data/``:

* ``PROFILER_NOTEBOOKS_EXECUTE=1``: execute (a notebook that fails fails the build);
* ``PROFILER_NOTEBOOKS_EXECUTE=0``: never execute;
* ``PROFILER_SESSION``, ``PROFILER_BEFORE``, ``PROFILER_AFTER`` set: the sessions to
  execute against instead of ``tests/data/`` (``profiler demo`` sets them to its own);
* unset: execute when ``notebooks/`` and ``tests/data/session/`` are next to
  ``mkdocs.yml``, i.e. when the repository's own site is built. The copy of
  the site ``profiler demo`` builds (``docs/`` and ``mkdocs.yml`` only) is not
  executed, which keeps it fast: its pages show the notebooks of the clone
  profiler runs from without outputs, and say so.

A notebook page listed in the nav but with no notebook to show gets a short
page saying where the notebooks live, so a strict build never fails on it.

:func:`execute` is also what ``tests/test_notebooks.py`` runs the notebooks with.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from nbformat import NotebookNode

EXECUTE_ENV = "PROFILER_NOTEBOOKS_EXECUTE"
PAGES = "notebooks"  # the folder of the generated pages, under docs_dir
SESSIONS = ("session", "session-fresh")  # tests/data/<name>: what the build executes against
SESSION_VARIABLES = ("PROFILER_SESSION", "PROFILER_BEFORE", "PROFILER_AFTER")
KERNEL = "profiler-notebooks"
CELL_TIMEOUT = 300


def session_environment(root: Path) -> dict[str, str]:
    """The environment variables that point the notebooks at the recorded sessions of ``root``."""
    data = root.resolve() / "tests" / "data"
    fresh = data / SESSIONS[1]
    after = fresh if (fresh / "manifest.json").is_file() else data / SESSIONS[0]
    return {
        "PROFILER_SESSION": str(data / SESSIONS[0]),
        "PROFILER_BEFORE": str(data / SESSIONS[0]),
        "PROFILER_AFTER": str(after),
    }


def execute(
    path: Path, *, env: Mapping[str, str] | None = None, timeout: int = CELL_TIMEOUT
) -> NotebookNode:
    """``path`` executed in its own folder on a kernel of this interpreter; raises
    ``nbclient.exceptions.CellExecutionError`` on the first cell that fails.

    A kernelspec made for the run names ``sys.executable``, so the kernel has the
    same packages (and the same profiler) as the caller, whatever kernels are installed.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = read(path)
    kernel_env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    kernel_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="profiler-kernels-") as kernels:
        spec = Path(kernels) / KERNEL
        spec.mkdir()
        (spec / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": f"Python ({sys.executable})",
                    "language": "python",
                }
            )
        )
        manager = KernelManager(
            kernel_name=KERNEL,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]),
            transport="ipc",  # a socket file in the temporary folder, not TCP on loopback
            ip=str(Path(kernels) / "kernel"),
        )
        client = NotebookClient(
            notebook,
            km=manager,
            timeout=timeout,
            allow_errors=False,
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute(env=kernel_env, cleanup_kc=True)  # the kernel is shut down after
    return notebook


def read(path: Path) -> NotebookNode:
    import nbformat

    notebook: NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return notebook


def to_markdown(notebook: NotebookNode, stem: str) -> tuple[str, dict[str, bytes]]:
    """The page's Markdown and its figures (file name under the page's folder -> bytes)."""
    from nbconvert import MarkdownExporter

    exporter = MarkdownExporter()  # type: ignore[no-untyped-call]
    body, resources = exporter.from_notebook_node(
        notebook, resources={"output_files_dir": f"{stem}_files"}
    )
    outputs: dict[str, bytes] = resources.get("outputs", {})
    return body, outputs


def find_notebooks(config_dir: Path) -> Path | None:
    """``notebooks/`` next to ``mkdocs.yml``, else that of the clone profiler runs from."""
    here = config_dir / "notebooks"
    if here.is_dir():
        return here
    try:
        from profiler.demo import site_source
    except ImportError:
        return None
    root = site_source()
    if root is not None and (root / "notebooks").is_dir():
        return root / "notebooks"
    return None


def should_execute(config_dir: Path, notebooks: Path | None) -> tuple[bool, str]:
    """Whether to execute, and why not when not."""
    wanted = os.environ.get(EXECUTE_ENV, "").strip()
    if wanted == "0":
        return False, f"{EXECUTE_ENV}=0 was set for this build"
    if wanted == "1":
        return True, ""
    if notebooks is None:
        return False, "no notebooks/ folder was found"
    if notebooks != config_dir / "notebooks":
        return False, (
            "this copy of the site is not the repository's, and the notebooks are only "
            f"executed for the repository's own site (or with {EXECUTE_ENV}=1)"
        )
    if not (config_dir / "tests" / "data" / SESSIONS[0] / "manifest.json").is_file():
        return False, "the recorded session tests/data/session is not here"
    return True, ""


NOTEBOOK_MARK = '<span class="notebook-page"></span>\n\n'
"""Marks a page as a notebook: docs/stylesheets/notebooks.css wraps its long code lines."""


def nav_pages(nav: Any) -> Iterator[str]:
    """Every page path of ``nav`` (a nested list of strings and one-key dicts)."""
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


def not_executed_note(reason: str) -> str:
    return (
        '!!! note "Shown without outputs"\n\n'
        f"    The notebook was not executed for this build: {reason}. Run it on the "
        "recorded session with `jupyter lab notebooks/` (the `notebooks` extra), or build "
        "the repository's site to see its outputs.\n\n"
    )


def generate(config: MkDocsConfig) -> None:
    import mkdocs_gen_files

    config_dir = Path(config.config_file_path).resolve().parent
    notebooks = find_notebooks(config_dir)
    run, reason = should_execute(config_dir, notebooks)
    env = session_environment(notebooks.parent if notebooks else config_dir)
    # Sessions named by the caller win: `profiler demo` runs the notebooks on its own two.
    env.update({key: os.environ[key] for key in SESSION_VARIABLES if os.environ.get(key)})
    written: set[str] = set()
    for path in sorted(notebooks.glob("*.ipynb")) if notebooks else []:
        notebook = execute(path, env=env) if run else read(path)
        body, figures = to_markdown(notebook, path.stem)
        if not run:
            title, _, rest = body.partition("\n")
            body = (
                f"{title}\n\n{not_executed_note(reason)}{rest}"
                if title.startswith("# ")
                else (not_executed_note(reason) + body)
            )
        page = f"{PAGES}/{path.stem}.md"
        with mkdocs_gen_files.open(page, "w") as out:
            out.write(NOTEBOOK_MARK + body)
        for name, data in figures.items():
            with mkdocs_gen_files.open(f"{PAGES}/{name}", "wb") as out:
                out.write(data)
        written.add(page)
    docs = Path(config.docs_dir)
    for page in nav_pages(config.nav):
        if page.startswith(f"{PAGES}/") and page not in written and not (docs / page).exists():
            with mkdocs_gen_files.open(page, "w") as out:
                name = Path(page).stem
                out.write(
                    f"# {name}\n\nThis notebook lives in the repository, as "
                    f"`notebooks/{name}.ipynb`; this copy of the site was built without it.\n"
                )


if __name__ == "<run_path>":  # run by the gen-files plugin
    import mkdocs_gen_files as _gen

    generate(_gen.config)
