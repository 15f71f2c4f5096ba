"""``profiler demo``: the README's main job, end to end, smaller.

A real run: embedded PostgreSQL, the lab in both modes under load, sessions,
comparison, publication and the site build; only shorter than the default.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.postgres
def test_demo_records_compares_and_builds_the_site(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # WHEN the demo runs shorter than its default
    result = run_cli(
        "demo", "--users", "24", "--seconds", "6", "--no-mem", "-o", str(out), timeout=300
    )
    # THEN both sessions, the comparison table and a built site with the findings
    assert result.exit_code == 0, result.output
    assert "held (before) vs fresh (after)" in result.stdout
    assert "throughput" in result.stdout and "invoke_tool" in result.stdout
    for mode in ("held", "fresh"):
        assert (out / "sessions" / mode / "manifest.json").exists()
        assert (out / "sessions" / mode / "load.json").exists()
        assert (out / "site" / "site" / "findings" / mode / "index.html").exists()
    assert (out / "site" / "site" / "findings" / "compare-held-vs-fresh" / "index.html").exists()
    # AND a second run replaces its own output, but never a folder that is not a demo's
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = run_cli("demo", "-o", str(other))
    assert refused.exit_code == 2, refused.output
    assert (other / "notes.txt").read_text() == "keep me"
