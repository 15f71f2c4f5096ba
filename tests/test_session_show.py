"""`session show` tables on recorded sessions: what the columns print at their edges."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis.code_paths import NO_FRAMES, describe
from profiler.units import offset

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(8.54, "+8.5s"), (-14.93, "-14.9s"), (0.0, "+0.0s"), (-0.04, "+0.0s"), (-0.06, "-0.1s")],
)
def test_an_offset_carries_one_sign(seconds: float, text: str) -> None:
    assert offset(seconds) == text


def test_a_transaction_begun_before_the_session_starts_at_a_negative_offset(
    tmp_path: Path, run_cli: Any
) -> None:
    # GIVEN the held session with its start moved 20 s later than every transaction
    folder = shutil.copytree(DATA / "session", tmp_path / "session")
    manifest = json.loads((folder / "manifest.json").read_text())
    started = datetime.fromisoformat(manifest["started_at"]) + timedelta(seconds=20)
    manifest["started_at"] = started.isoformat()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    # WHEN shown
    result = run_cli("session", "show", str(folder))
    # THEN the start column is negative, with one sign
    assert result.exit_code == 0, result.output
    assert "+-" not in result.stdout
    assert re.search(r" -1\d\.\ds ", result.stdout), result.stdout


def test_a_stack_with_no_frame_has_a_path_that_says_so() -> None:
    assert describe("").display == NO_FRAMES
    assert describe("endpoint GET /tools (list_tools)").display == (
        f"GET /tools (list_tools): {NO_FRAMES}"
    )
