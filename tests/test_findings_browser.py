"""The demo's findings pages as a reader sees them: headless Chromium at 1400x900.

One real ``profiler demo`` (embedded PostgreSQL, the lab held then fresh under load,
published and built) serves every test here. Chromium is driven over the DevTools protocol
(tests/cdp.py): ``--dump-dom`` cannot measure a page or move the mouse.

Figures these tests hold the pages to (issue 17): on main before the rebuild (59cc82f) the
held demo page was 32,348 px tall at 1400x900 (measured with the same browser and window),
so it must now be at most a third of that; the Diagnosis and its two plots fit the first
screen; hovering a timeline point shows its value; a published session weighs at most
50 MB. The time the page takes to open (budget 3 s) is measured and noted, not asserted.
Screenshots and measures.json go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cdp import Browser
from tests.conftest import run_profiler
from tests.test_site_browser import ARTIFACTS, _chromium, serve

HEIGHT_BEFORE = 32_348  # px, the held demo page on main at 59cc82f, 1400x900
SCREEN = 900
SIZE_CAP = 50 * 2**20

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's output folder (sessions/, site/ built)."""
    _chromium()
    out = tmp_path_factory.mktemp("findings-browser") / "demo"
    result = run_profiler(
        "demo", "--users", "24", "--seconds", "6", "--no-mem", "-o", str(out), timeout=400
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def base(demo: Path) -> Iterator[str]:
    with serve(demo / "site" / "site") as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(_chromium(), tmp_path / "chromium", width=1400, height=SCREEN)
    try:
        yield opened
    finally:
        opened.close()


def _drawn(browser: Browser, count: int) -> bool:
    states = browser.evaluate(
        "[...document.querySelectorAll('div.timeline')].map(d => d.dataset.drawn || '')"
    )
    return bool(states) and len(states) >= count and all(s == "yes" for s in states)


def _wait(probe: object, timeout: float = 20) -> None:
    from tests.helpers import retry

    retry(probe, timeout=timeout, what="the page's timelines drawn")  # type: ignore[arg-type]


def _note(name: str, figures: dict[str, object]) -> None:
    """Measured figures beside the screenshots (test-artifacts/screenshots/measures.json)."""
    path = ARTIFACTS / "measures.json"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    known = json.loads(path.read_text()) if path.is_file() else {}
    known[name] = figures
    path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")


def _shot(browser: Browser, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(ARTIFACTS / name)


def test_the_held_page_leads_with_the_diagnosis_and_its_plots(base: str, browser: Browser) -> None:
    # WHEN the held session's page is opened
    started = time.monotonic()
    browser.open(f"{base}/findings/held/")
    opened = time.monotonic() - started
    _wait(lambda: _drawn(browser, 2))
    _shot(browser, "findings-held-first-screen.png")

    # THEN the Diagnosis heading, its first cause and both interactive plots fit the first screen
    box = browser.evaluate(
        """(() => {
        const h = [...document.querySelectorAll('article h2')].find(e => e.id === 'diagnosis');
        const plots = [...document.querySelectorAll('.lead-plots .timeline-chart')];
        const first = h && h.parentElement.querySelector('h2#diagnosis ~ ul li');
        return {heading: h ? h.getBoundingClientRect().top : null,
                plots: plots.map(p => p.getBoundingClientRect().bottom),
                cause: first ? first.getBoundingClientRect().top : null,
                height: document.documentElement.scrollHeight};
    })()"""
    )
    assert box["heading"] is not None and 0 < box["heading"] < SCREEN, box
    assert len(box["plots"]) == 2 and max(box["plots"]) <= SCREEN, box
    assert box["cause"] is not None and box["cause"] < SCREEN, box
    # AND the whole page is at most a third of what it was
    assert box["height"] <= HEIGHT_BEFORE / 3, box
    # AND how long it took to open is recorded (issue 17's budget is 3 s): a note, not an
    # assertion, since a wall-clock bound fails on a busy CI machine, not on a slow page
    timing = browser.evaluate(
        "performance.getEntriesByType('navigation').map(e => e.loadEventEnd)[0]"
    )
    _note("held_page", {"height_px": box["height"], "open_s": round(opened, 2),
                        "load_event_ms": round(timing or 0)})  # fmt: skip


def test_frame_names_render_as_written(base: str, browser: Browser, demo: Path) -> None:
    for page in ("findings/held/", "findings/", "findings/compare-held-vs-fresh/"):
        browser.open(f"{base}/{page}")
        text = browser.evaluate("document.querySelector('article').innerText")
        assert "**" not in text, page
        source = demo / "site" / "docs" / page / "index.md"
        if "&lt;locals&gt;" in source.read_text():
            assert "<locals>" in text, page
    # AND dunder frame names keep their underscores (not turned into bold)
    browser.open(f"{base}/findings/held/")
    text = browser.evaluate("document.querySelector('article').innerText")
    assert "invoke_tool" in text


def test_hovering_a_timeline_point_shows_its_value(base: str, browser: Browser) -> None:
    browser.open(f"{base}/findings/held/")
    _wait(lambda: _drawn(browser, 2))
    # the highest point of the connections-held chart, in page pixels
    point = browser.evaluate(
        """(() => {
        const gd = document.querySelector('.lead-plots .timeline-chart');
        const trace = gd.data.reduce((a, b) => Math.max(...a.y) >= Math.max(...b.y) ? a : b);
        const i = trace.y.indexOf(Math.max(...trace.y));
        const L = gd._fullLayout, r = gd.getBoundingClientRect();
        return {x: r.left + L._size.l + L.xaxis.l2p(trace.x[i]),
                y: r.top + L._size.t + L.yaxis.l2p(trace.y[i]),
                value: trace.y[i], at: trace.x[i], name: trace.name};
    })()"""
    )
    browser.mouse(point["x"], point["y"])
    hover = ""

    def shown() -> bool:
        nonlocal hover
        hover = browser.evaluate(
            "(document.querySelector('.lead-plots .hoverlayer') || {}).textContent || ''"
        )
        return "transactions at" in hover

    _wait(shown, timeout=10)
    _shot(browser, "findings-held-hover.png")
    assert f"{point['value']:g} transactions at" in hover, (hover, point)


def test_the_held_pages_work_only_cpu_flamegraph_leads_to_the_checkout(
    base: str, browser: Browser
) -> None:
    # GIVEN the held page's CPU flamegraph links, in page order
    browser.open(f"{base}/findings/held/")
    links = browser.evaluate(
        "[...document.querySelectorAll('article a')]"
        ".filter(a => /assets\\/cpu\\//.test(a.getAttribute('href')))"
        ".map(a => ({text: a.textContent, href: a.href}))"
    )
    # THEN the work-only one comes first
    assert links and links[0]["text"] == "CPU, work only", links
    # AND opened, it says what it left out and keeps the loop asleep in a pool checkout
    browser.open(links[0]["href"])
    text = browser.evaluate("document.documentElement.textContent")
    share = re.search(r"waiting threads left out: (\d+)% of", text)
    assert share is not None, text[:500]
    assert int(share[1]) >= 50  # idle AnyIO threads and the loop in select: most of py-spy's
    assert "QueuePool._do_get" in text
    _shot(browser, "findings-held-cpu-work-only.png")


def test_the_comparison_shows_the_verdict_and_overlaid_plots(base: str, browser: Browser) -> None:
    browser.open(f"{base}/findings/compare-held-vs-fresh/")
    _wait(lambda: _drawn(browser, 2))
    _shot(browser, "findings-compare.png")
    verdict = browser.evaluate("document.querySelector('article blockquote').innerText")
    assert verdict.startswith("Verdict:"), verdict
    assert "errors" in verdict and "→" in verdict
    traces = browser.evaluate(
        "[...document.querySelectorAll('.compare-plots .timeline-chart')]"
        ".map(gd => gd.data.map(t => t.name))"
    )
    assert traces == [["before", "after"], ["before", "after"]], traces
    ranges = browser.evaluate(
        "[...document.querySelectorAll('.compare-plots .timeline-chart')]"
        ".map(gd => gd._fullLayout.xaxis.range.map(Math.round))"
    )
    assert ranges[0] == ranges[1], ranges  # one x range for both plots


def test_the_notebooks_ran_on_the_demo_sessions(base: str, browser: Browser, demo: Path) -> None:
    browser.open(f"{base}/notebooks/02-compare-sessions/")
    _shot(browser, "notebook-compare-sessions.png")
    figures = browser.evaluate(
        "[...document.querySelectorAll('article img')]"
        ".filter(i => i.complete && i.naturalWidth > 100).map(i => i.getAttribute('src'))"
    )
    assert figures, "no rendered figure on the notebook page"
    text = browser.evaluate("document.querySelector('article').innerText")
    assert str((demo / "sessions" / "held").resolve()) in text  # its own sessions, not tests/data
    assert "Shown without outputs" not in text
    # AND long code lines wrap instead of running off the edge
    wrap = browser.evaluate(
        "getComputedStyle(document.querySelector('article pre > code')).whiteSpace"
    )
    assert wrap == "pre-wrap", wrap


def test_published_sessions_stay_small(demo: Path) -> None:
    site = demo / "site" / "site"
    for page in ("held", "fresh", "compare-held-vs-fresh"):
        folder = site / "findings" / page
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        _note(f"size_{page}", {"bytes": size})
        assert size <= SIZE_CAP, (page, size)
    # plotly's JS is one file for the whole site
    assert [p.name for p in site.rglob("plotly*.js")] == ["plotly.min.js"]


if __name__ == "__main__":  # measure a built site: python -m tests.test_findings_browser SITE
    directory = Path(sys.argv[1])
    with serve(directory) as url:
        measuring = Browser(shutil.which("chromium") or "chromium", Path("/tmp/cdp-measure"))
        try:
            for name in sys.argv[2:]:
                begun = time.monotonic()
                measuring.open(f"{url}/{name}")
                print(
                    json.dumps(
                        {
                            "page": name,
                            "height": measuring.evaluate("document.documentElement.scrollHeight"),
                            "open_s": round(time.monotonic() - begun, 2),
                        }
                    )
                )
        finally:
            measuring.close()
