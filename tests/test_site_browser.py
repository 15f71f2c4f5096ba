"""The published site, opened in a real browser: headless Chromium against the built site.

A session is published into a temporary material site, built with ``mkdocs
build --strict``, served by ``python -m http.server`` on 127.0.0.1 (a
subprocess stopped by its PID), and each page is opened with::

    chromium --headless=new --no-sandbox --disable-gpu --enable-logging=stderr --v=0
             --virtual-time-budget=5000 --dump-dom URL

The DOM must hold the expected headings (home page, findings index, the
session's page) and frame names (the hold flamegraph SVG).

Search is tried on the repository's own site (``mkdocs build --strict`` of mkdocs.yml),
driven over the DevTools protocol (tests/cdp.py): a query is entered into Material's
search box and the results are polled until the search worker has answered it.

Console errors: Chromium writes every console message of the page to stderr
as one line ``[pid:tid:time:INFO:CONSOLE:line] "message", source: URL (line)``,
with the level always ``INFO`` whatever the page used (``console.log`` and
``console.error`` look the same), so *every* line containing ``:CONSOLE`` is a
failure, as is any line containing ``Uncaught`` (an exception nobody caught).
A published page has no reason to log anything.

Screenshots (``--screenshot=PATH --window-size=1280,900``) of every page go to
pytest's tmp dir and are copied into ``test-artifacts/screenshots/`` at the
repository root, for CI to keep. Each is checked for what it shows: the same
page's DOM holds that page's headings and text, and the image is the window's
size with hundreds of colours (a blank page has one).

Needs Chromium (``apt-get install -y chromium`` on Debian/Ubuntu runners);
skipped, saying so, when it is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiler.report.publish import publish_comparison, publish_session
from profiler.report.redact import Redaction
from profiler.report.site_build import build_site as build_mkdocs_site
from tests.cdp import Browser
from tests.helpers import retry
from tests.test_publish import build_session, build_site

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts" / "screenshots"
BROWSER_TIMEOUT = 120


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (CI: apt-get install -y chromium)")
    return found


@dataclass(frozen=True)
class Opened:
    dom: str
    console: list[str]  # the stderr lines that are console messages or uncaught errors


def browse(url: str, *, profile: Path) -> Opened:
    """``--dump-dom`` of ``url``; the console lines Chromium logged meanwhile."""
    done = subprocess.run(
        [
            _chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    console = [
        line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line
    ]
    return Opened(done.stdout, console)


def screenshot(url: str, path: Path, *, profile: Path) -> Path:
    done = subprocess.run(
        [
            _chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
            f"--screenshot={path}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert path.is_file() and path.stat().st_size > 0, done.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, ARTIFACTS / path.name)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built site with a published session and comparison, served on 127.0.0.1."""
    _chromium()
    root = tmp_path_factory.mktemp("browser")
    site = build_site(root / "site")
    before = build_session(root / "sessions" / "before", name="checkout-slow", held_seconds=6)
    after = build_session(root / "sessions" / "after", name="checkout-fixed", held_seconds=0.6)
    publish_session(before, site, title="Checkout, before", redaction=Redaction(literals=True))
    publish_comparison(before, after, site, title="Checkout, before and after")
    built = build_mkdocs_site(site)
    with serve(built) as base:
        yield base


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """``directory`` over http on 127.0.0.1 (the material theme's scripts refuse file://),
    the server stopped by PID at the end."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        retry(lambda: _answers(base), timeout=20, what="http.server answering")
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A fresh Chromium profile per test: no state shared between pages."""
    return tmp_path / "chromium-profile"


def test_the_home_page_renders_without_console_errors(served: str, profile: Path) -> None:
    opened = browse(served + "/", profile=profile)
    assert "Profiler test site" in opened.dom
    assert "Findings" in opened.dom  # the nav's last section
    assert opened.console == []


def test_the_findings_index_lists_the_published_pages(served: str, profile: Path) -> None:
    opened = browse(served + "/findings/", profile=profile)
    assert '<h1 id="findings">Findings</h1>' in opened.dom
    assert 'href="checkout-slow/"' in opened.dom
    assert "Checkout, before" in opened.dom
    assert 'href="compare-checkout-slow-vs-checkout-fixed/"' in opened.dom
    assert opened.console == []


def test_the_session_page_renders_its_sections(served: str, profile: Path) -> None:
    opened = browse(served + "/findings/checkout-slow/", profile=profile)
    assert "Session report: checkout-slow" in opened.dom
    for heading in ("Diagnosis", "Findings", "Flamegraphs", "Held transactions"):
        assert f">{heading}<" in opened.dom or f">{heading} <" in opened.dom, heading
    assert "assets/hold-flamegraph.svg" in opened.dom
    assert "alice@example.com" not in opened.dom  # --redact-literals
    assert opened.console == []


def test_the_comparison_page_renders(served: str, profile: Path) -> None:
    opened = browse(served + "/findings/compare-checkout-slow-vs-checkout-fixed/", profile=profile)
    assert "Checkout, before and after" in opened.dom
    assert "Connection-seconds held by code path" in opened.dom
    assert "<strong>better</strong>" in opened.dom
    assert opened.console == []


def test_the_hold_flamegraph_shows_the_holding_frames(served: str, profile: Path) -> None:
    opened = browse(served + "/findings/checkout-slow/assets/hold-flamegraph.svg", profile=profile)
    assert "<svg" in opened.dom
    for frame in ("checkout_handler", "wait_for_payment"):
        assert frame in opened.dom, frame
    assert opened.console == []


# Each page, and what it must show: a heading or text that only that page has.
PAGES = {
    "home": ("/", ("Profiler test site",)),
    "findings": ("/findings/", ('<h1 id="findings">Findings</h1>', "Checkout, before")),
    "session": ("/findings/checkout-slow/", ("Session report: checkout-slow", "Held transactions")),
    "comparison": (
        "/findings/compare-checkout-slow-vs-checkout-fixed/",
        ("Checkout, before and after", "Connection-seconds held by code path"),
    ),
    "hold-flamegraph": (
        "/findings/checkout-slow/assets/hold-flamegraph.svg",
        ("checkout_handler", "wait_for_payment"),
    ),
}


def _drawn(png: Path) -> tuple[tuple[int, int], int]:
    """The image's (width, height) and how many distinct colours it has (1: a blank page)."""
    import matplotlib.image
    import numpy as np

    pixels = matplotlib.image.imread(png)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    return (pixels.shape[1], pixels.shape[0]), len(colours)


@pytest.mark.parametrize("name", list(PAGES))
def test_screenshot_of_each_page_shows_its_content(
    served: str, tmp_path: Path, profile: Path, name: str
) -> None:
    # GIVEN a page of the site and the text it must show
    path, expected = PAGES[name]
    # WHEN the browser renders it, to a DOM and to a screenshot
    opened = browse(served + path, profile=profile)
    shot = screenshot(served + path, tmp_path / f"site-{name}.png", profile=profile)
    # THEN the rendered page holds its headings and text, logged nothing,
    for text in expected:
        assert text in opened.dom, (name, text)
    assert opened.console == [], name
    # AND the screenshot is that window drawn (text and colours, not a blank or error page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    size, colours = _drawn(shot)
    assert size == (1280, 900), name
    assert colours > 20, (name, colours)
    assert (ARTIFACTS / shot.name).is_file()


# -- search, on the repository's own site ---------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def docs_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The repository's site (its guides, its search index), built and served."""
    _chromium()
    built = tmp_path_factory.mktemp("docs-site") / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with serve(built) as base:
        yield base


def test_searching_an_option_as_typed_finds_the_cpu_guide(docs_site: str, tmp_path: Path) -> None:
    # GIVEN the site's home page in a browser
    browser = Browser(_chromium(), tmp_path / "chromium", width=1400, height=900)
    try:
        browser.open(docs_site + "/")
        # WHEN a reader enters a py-spy option in the search box
        browser.evaluate("document.querySelector('input.md-search__input').focus()")
        browser.paste("py-spy --idle")

        def answered() -> str:
            meta = browser.evaluate(
                "(document.querySelector('.md-search-result__meta') || {}).textContent || ''"
            )
            return str(meta) if "matching document" in str(meta) else ""

        # THEN, once the search worker has answered that query (the only one sent), the
        # CPU guide is among the results
        meta = retry(answered, timeout=30, what="search results for `py-spy --idle`")
        found = browser.evaluate(
            "[...document.querySelectorAll('.md-search-result__list a')]"
            ".map(a => new URL(a.href).pathname)"
        )
        assert "/guide/cpu-profiling/" in found, (meta, found)
        # AND the box still shows the query as typed
        typed = browser.evaluate("document.querySelector('input.md-search__input').value")
        assert typed == "py-spy --idle"
    finally:
        browser.close()
