"""Every before/after figure the README, the tutorial and the how-tos quote comes from one
recorded run, docs/figures.json (scripts/refresh_demo_figures.py writes it and fills them in).

Fails when a marked figure or output block differs from the file, and when a figure in
req/s or a before → after pair is typed outside a mark: the docs once quoted four runs.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNMARKED = re.compile(r"\d+(?:\.\d+)? ?req/s|\d+(?:\.\d+)? ?\S* ?→ ?\d")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "refresh_demo_figures", ROOT / "scripts" / "refresh_demo_figures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()
FIGURES = json.loads((ROOT / "docs" / "figures.json").read_text())


@pytest.mark.parametrize("page", SCRIPT.PAGES)
def test_every_marked_figure_matches_the_figures_file(page: str) -> None:
    text = (ROOT / page).read_text()
    assert SCRIPT.INLINE.search(text) or SCRIPT.BLOCK.search(text), f"{page} quotes no figure"
    assert SCRIPT.fill(text, FIGURES) == text, (
        f"{page} disagrees with docs/figures.json: run scripts/refresh_demo_figures.py --from DIR"
    )


@pytest.mark.parametrize("page", SCRIPT.PAGES)
def test_no_before_after_figure_is_typed_by_hand(page: str) -> None:
    text = SCRIPT.BLOCK.sub("", SCRIPT.INLINE.sub("", (ROOT / page).read_text()))
    assert not UNMARKED.findall(text), UNMARKED.findall(text)


def test_the_figures_file_holds_both_sides_of_every_measure() -> None:
    for key in FIGURES["measures"]:
        assert key in FIGURES["before"] and key in FIGURES["after"], key
    for side in ("before", "after"):
        assert FIGURES[side]["error_rate"].endswith("%")


def test_a_changed_figure_is_caught() -> None:
    page = (ROOT / SCRIPT.PAGES[-1]).read_text()
    changed = json.loads(json.dumps(FIGURES))
    changed["after"]["throughput_rps"] = "999.99 req/s"
    assert SCRIPT.fill(page, changed) != page
