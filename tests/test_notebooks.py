"""The notebooks of ``notebooks/``: they run on the recorded sessions, and are committed clean.

Each notebook is executed with nbclient on a kernel of this interpreter (the
helper the site build uses, ``docs/hooks/notebooks.py``) against
``tests/data/session`` and ``tests/data/session-fresh``, as recorded by
``scripts/record_test_session.py``: any cell that raises fails the test, and
every notebook must draw its plots.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SESSIONS = [ROOT / "tests" / "data" / "session", ROOT / "tests" / "data" / "session-fresh"]
HOOK = ROOT / "docs" / "hooks" / "notebooks.py"
IMAGES = {"image/png", "image/svg+xml"}


@functools.cache
def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebooks_hook", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["notebooks_hook"] = module
    spec.loader.exec_module(module)
    return module


def test_there_are_notebooks_and_sessions() -> None:
    assert [path.name for path in NOTEBOOKS] == [
        "01-explore-session.ipynb",
        "02-compare-sessions.ipynb",
        "03-memory.ipynb",
    ]
    for session in SESSIONS:
        assert (session / "manifest.json").is_file(), session


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    # GIVEN a committed notebook, read as plain JSON
    notebook = json.loads(path.read_text(encoding="utf-8"))
    # THEN no code cell carries outputs or an execution count, and the kernel is python3
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} cell {index} has outputs"
            assert cell["execution_count"] is None, f"{path.name} cell {index} was executed"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


def test_sessions_are_small_and_relative() -> None:
    # GIVEN the recorded sessions the notebooks read
    for session in SESSIONS:
        files = [path for path in session.rglob("*") if path.is_file()]
        # THEN each stays small, and the manifest names its files relative to the folder
        assert sum(path.stat().st_size for path in files) < 5 * 10**6, session
        manifest = json.loads((session / "manifest.json").read_text())
        for probe in manifest["probes"].values():
            for name in probe["files"]:
                assert not Path(name).is_absolute()
                assert (session / name).exists(), name


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_on_the_recorded_sessions(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the notebook, the recorded sessions, and jupyter's platform directories
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    hook = _hook()
    env = hook.session_environment(ROOT)
    # WHEN it is executed in its folder on a kernel of this interpreter
    notebook = hook.execute(path, env=env)
    # THEN every code cell ran (an error would have raised), and it drew plots
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    errors = [output for output in outputs if output.output_type == "error"]
    assert not errors, errors
    images = [output for output in outputs if IMAGES & set(output.get("data", {}))]
    assert len(images) >= 2, f"{path.name} drew {len(images)} plot(s)"
    stderr = [output.text for output in outputs if output.get("name") == "stderr"]
    assert not stderr, stderr  # no warnings printed by the notebook either


@pytest.mark.slow
def test_site_copy_without_data_shows_notebooks_unexecuted(tmp_path: Path) -> None:
    # GIVEN a copy of the site without notebooks/ or tests/data/ beside it (what the demo builds)
    hook = _hook()
    # WHEN the hook decides whether to execute
    run, reason = hook.should_execute(tmp_path, ROOT / "notebooks")
    # THEN it does not, and says why; the repository's own site is executed
    assert not run
    assert "not the repository's" in reason
    assert hook.should_execute(ROOT, ROOT / "notebooks") == (True, "")
    # AND a notebook converts to a page with its note and no outputs
    import nbformat

    notebook = nbformat.read(NOTEBOOKS[0], as_version=4)
    body, figures = hook.to_markdown(notebook, NOTEBOOKS[0].stem)
    assert body.startswith("# ")
    assert figures == {}
