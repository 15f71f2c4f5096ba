"""Publishing into a MkDocs site: page, assets, index, nav, and nothing secret left behind.

The sessions are built by hand with the real writers (``RecordingWriter``,
``StackLogWriter``), exactly as ``session run`` writes them, with fixed data:
a worker holds a transaction idle for seconds while py-spy sees it in
``checkout_handler``; the captured queries carry string and number literals;
the manifest's DSN and the target's command line carry a password and hosts.
The site is a minimal material site whose nav ends in Findings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from profiler.capture.stack_log import StackLogWriter
from profiler.capture.stacks import Frame, StackSample
from profiler.errors import ChecksFailed, ExitCode, UsageError
from profiler.model import ActivitySample, Owner, Snapshot
from profiler.pg.recording import RecordingWriter
from profiler.report.publish import publish_comparison, publish_session
from profiler.report.redact import Redaction
from profiler.report.safety_pass import scrub_tree
from profiler.report.site import MARKER
from profiler.report.site_build import build_site as build_mkdocs_site
from tests.conftest import CliResult, run_profiler
from tests.helpers import client_backend

T0 = 1_750_000_000.0
PASSWORD = "S3cr3t-Pa55word"
DB_HOST = "db.prod.internal"
MACHINE = "buildbox7"
CLIENT_IP = "10.20.30.40"
DSN = f"postgresql://app:{PASSWORD}@{DB_HOST}:5432/app"
CMDLINE = f"gunicorn checkout.app:app --workers 2 --env DATABASE_URL={DSN}"
HELD_QUERY = (
    "UPDATE orders SET note = 'alice@example.com', total = 4242.50 "
    "WHERE id = 987654321 AND status = E'pending\\'s'"
)
ACTIVE_QUERY = (
    "SELECT * FROM t1 WHERE email = 'bob.secret@example.org' AND amount > 1234567 "
    "AND body = $body$Sensitive dollar text$body$ /* route=checkout */"
)
STRING_LITERALS = (
    "'alice@example.com'",
    "E'pending\\'s'",
    "'bob.secret@example.org'",
    "$body$Sensitive dollar text$body$",
)
DISTINCTIVE = ("alice@example.com", "bob.secret@example.org", "Sensitive dollar text")
NUMBER_LITERALS = ("4242.50", "987654321", "1234567")
HOSTS = (DB_HOST, CLIENT_IP, MACHINE, "cache.corp.example.com")
WORKER = Owner("process", 2001, CMDLINE, pids=(2001,))
TEXT_SUFFIXES = (".md", ".svg", ".html", ".json", ".txt")


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def backend(at: float, pid: int, *, state: str, query: str, xact: float | None) -> ActivitySample:
    return client_backend(
        at,
        pid,
        state=state,
        backend_start=T0 - 100,
        query_start=at - 0.2,
        state_change=xact if xact is not None else at - 0.1,
        xact_start=xact,
        query=query,
        application_name="checkout",
        client_addr=CLIENT_IP,
    )


FRAMES = (
    Frame("wait_for_payment", "/srv/app/payments.py", 88, None, "payments.py"),
    Frame("checkout_handler", "/srv/app/checkout.py", 42, None, "checkout.py"),
    Frame("handle", "/usr/lib/python3.12/site-packages/gunicorn/workers/sync.py", 135, None, None),
)


def build_session(directory: Path, *, name: str, held_seconds: float) -> Path:
    """A session folder: worker 2001 holds backend 7 idle in transaction for
    ``held_seconds`` while its stack sits in ``checkout_handler``."""
    directory.mkdir(parents=True)
    snapshots = []
    for k in range(1, 8):
        at = T0 + k
        held = at - (T0 + 0.5) <= held_seconds
        rows = [
            backend(
                at,
                7,
                state="idle in transaction" if held else "idle",
                query=HELD_QUERY,
                xact=T0 + 0.5 if held else None,
            ),
            backend(at, 8, state="active", query=ACTIVE_QUERY, xact=at - 0.1),
        ]
        snapshots.append(Snapshot(utc(at), 160004, tuple(rows), {7: WORKER, 8: WORKER}, {}))
    with RecordingWriter(directory / "activity.jsonl", {"interval": 1.0}) as out:
        for snapshot in snapshots:
            out.add(snapshot)
    with StackLogWriter(directory / "stacks.jsonl", {"interval": 0.5, "pids": [2001]}) as log:
        for k in range(16):
            log.add(
                StackSample(
                    worker_pid=2001,
                    thread_id=140_000,
                    thread_name="MainThread",
                    taken_at=utc(T0 + 0.5 * k),
                    dump_seconds=0.01,
                    active=False,
                    owns_gil=False,
                    frames=FRAMES,
                    os_thread_id=900,
                )
            )
    manifest = {
        "format": "profiler-session",
        "version": 1,
        "name": name,
        "started_at": utc(T0).isoformat(),
        "ended_at": utc(T0 + 8).isoformat(),
        "interrupted": False,
        "host": {"hostname": MACHINE, "kernel": "6.1", "cpus": 4, "python": "3.12.1"},
        "tools": {"profiler": "0", "py-spy": "0.4.0"},
        "settings": {"duration": 8, "pg_interval": 1.0, "dump_interval": 0.5, "tasks": False},
        "dsn": DSN,
        "targets": [
            {
                "pid": 2001,
                "role": "worker",
                "cmdline": CMDLINE + " --statsd-host cache.corp.example.com:8125",
            }
        ],
        "probes": {
            "pg": {"status": "ok", "error": None, "files": ["activity.jsonl"], "facts": {}},
            "stacks": {"status": "ok", "error": None, "files": ["stacks.jsonl"], "facts": {}},
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return directory


MKDOCS_YML = """\
site_name: Profiler test site
theme:
  name: material
markdown_extensions:
  - tables
  - admonition
  - pymdownx.emoji:
      emoji_index: !!python/name:material.extensions.emoji.twemoji
      emoji_generator: !!python/name:material.extensions.emoji.to_svg
nav:
  - Home: index.md
  - Findings:
      - findings/index.md
"""


def build_site(directory: Path) -> Path:
    (directory / "docs" / "findings").mkdir(parents=True)
    (directory / "mkdocs.yml").write_text(MKDOCS_YML)
    (directory / "docs" / "index.md").write_text("# Profiler test site\n\nWelcome.\n")
    (directory / "docs" / "findings" / "index.md").write_text(
        f"# Findings\n\nPublished reports, newest first.\n\n{MARKER}\n"
    )
    return directory


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return build_site(tmp_path / "site")


@pytest.fixture
def session(tmp_path: Path) -> Path:
    return build_session(tmp_path / "sessions" / "before", name="checkout-slow", held_seconds=6)


@pytest.fixture
def fixed(tmp_path: Path) -> Path:
    return build_session(tmp_path / "sessions" / "after", name="checkout-fixed", held_seconds=0.6)


def published_texts(site: Path) -> dict[str, str]:
    """Every text file under docs/findings, by path relative to the site."""
    texts = {}
    for path in sorted((site / "docs" / "findings").rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            texts[path.relative_to(site).as_posix()] = path.read_text(encoding="utf-8")
    return texts


def nav_of(site: Path) -> list[Any]:
    from profiler.report.mkdocs_yaml import load_config

    nav = load_config(site / "mkdocs.yml")["nav"]
    assert isinstance(nav, list)
    return nav


def run_publish(*args: str, cwd: Path | None = None) -> CliResult:
    if cwd is None:
        return run_profiler("publish", *args)
    completed = subprocess.run(
        [sys.executable, "-m", "profiler", "publish", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


# -- publishing a session --------------------------------------------------------------------


def test_publish_writes_the_page_its_assets_the_index_and_the_nav(
    site: Path, session: Path
) -> None:
    # WHEN
    result = publish_session(session, site, title="Checkout, before the fix")

    # THEN
    page = site / "docs" / "findings" / "checkout-slow" / "index.md"
    assert result.page == page
    assert page.is_file()
    assert (page.parent / "assets" / "hold-flamegraph.svg").is_file()
    assert "assets/hold-flamegraph.svg" in page.read_text()
    index = (site / "docs" / "findings" / "index.md").read_text()
    entry = next(line for line in index.splitlines() if "checkout-slow/index.md" in line)
    assert entry.startswith("- [Checkout, before the fix](checkout-slow/index.md): ")
    assert "2025-06-15 15:06 UTC, 8 s" in entry
    assert index.index(MARKER) < index.index(entry)
    nav = nav_of(site)
    assert nav[0] == {"Home": "index.md"}
    assert nav[-1] == {
        "Findings": [
            "findings/index.md",
            {"Checkout, before the fix": "findings/checkout-slow/index.md"},
        ]
    }
    config = (site / "mkdocs.yml").read_text()
    assert "!!python/name:material.extensions.emoji.twemoji" in config
    assert result.to_json()["files"][0].startswith("docs/findings/checkout-slow/")


def test_the_index_entry_names_the_top_finding(site: Path, session: Path) -> None:
    # WHEN
    publish_session(session, site)

    # THEN
    index = (site / "docs" / "findings" / "index.md").read_text()
    entry = next(line for line in index.splitlines() if "checkout-slow/index.md" in line)
    assert re.search(r"\. (critical|warning|info): ", entry), entry


def test_republishing_needs_force_and_then_replaces_in_place(
    site: Path, session: Path, fixed: Path
) -> None:
    # GIVEN
    publish_session(session, site, title="Before")
    publish_session(fixed, site, title="After")

    # WHEN
    with pytest.raises(UsageError) as refused:
        publish_session(session, site, title="Before, again")
    again = publish_session(session, site, title="Before, again", force=True)

    # THEN
    assert refused.value.exit_code == ExitCode.USAGE
    assert again.replaced
    findings = nav_of(site)[-1]["Findings"]
    assert findings == [
        "findings/index.md",
        {"Before, again": "findings/checkout-slow/index.md"},
        {"After": "findings/checkout-fixed/index.md"},
    ]
    index = (site / "docs" / "findings" / "index.md").read_text()
    entries = [line for line in index.splitlines() if line.startswith("- ")]
    assert len(entries) == 2
    assert entries[0].startswith("- [After](checkout-fixed/index.md)")
    assert entries[1].startswith("- [Before, again](checkout-slow/index.md)")


def test_publishing_twice_is_idempotent(site: Path, session: Path) -> None:
    # GIVEN
    publish_session(session, site, title="Before")
    first = {name: text for name, text in published_texts(site).items()}
    config = (site / "mkdocs.yml").read_text()

    # WHEN
    publish_session(session, site, title="Before", force=True)

    # THEN
    assert published_texts(site) == first
    assert (site / "mkdocs.yml").read_text() == config


def test_no_password_is_published(site: Path, session: Path) -> None:
    # WHEN
    publish_session(session, site)

    # THEN
    texts = published_texts(site)
    assert any("checkout-slow/assets/" in name for name in texts)
    for name, text in texts.items():
        assert PASSWORD not in text, name
    page = texts["docs/findings/checkout-slow/index.md"]
    assert "app:***@" in page


def test_redact_literals_leaves_no_captured_literal(site: Path, session: Path) -> None:
    # WHEN
    publish_session(session, site, redaction=Redaction(literals=True))

    # THEN
    for name, text in published_texts(site).items():
        for literal in (*STRING_LITERALS, *DISTINCTIVE):
            assert literal not in text, (name, literal)
        for number in NUMBER_LITERALS:
            assert not re.search(rf"(?<![\w.]){re.escape(number)}(?![\w])", text), (name, number)
    page = published_texts(site)["docs/findings/checkout-slow/index.md"]
    assert "UPDATE orders SET note = ?, total = ? WHERE id = ? AND status = ?" in page


def test_without_redact_literals_the_queries_are_shown(site: Path, session: Path) -> None:
    # WHEN
    publish_session(session, site)

    # THEN
    page = published_texts(site)["docs/findings/checkout-slow/index.md"]
    assert "'alice@example.com'" in page


def test_redact_hosts_leaves_no_host_name(site: Path, session: Path) -> None:
    # WHEN
    publish_session(session, site, redaction=Redaction(hosts=True))

    # THEN
    texts = published_texts(site)
    for name, text in texts.items():
        for host in HOSTS:
            assert not re.search(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", text), (name, host)
        assert PASSWORD not in text
    page = texts["docs/findings/checkout-slow/index.md"]
    assert "<host>" in page


def test_the_safety_pass_fails_loudly_on_a_literal_a_renderer_let_through(
    tmp_path: Path,
) -> None:
    # GIVEN a page that shows a captured query unredacted
    staged = tmp_path / "page"
    staged.mkdir()
    (staged / "index.md").write_text(f"Last query:\n\n```sql\n{HELD_QUERY}\n```\n")

    # WHEN / THEN
    with pytest.raises(ChecksFailed) as failed:
        scrub_tree(staged, Redaction(literals=True), queries=[HELD_QUERY])
    assert failed.value.exit_code == ExitCode.VIOLATIONS
    assert "alice" not in failed.value.message  # the message never repeats the value


def test_the_safety_pass_redacts_passwords_again(tmp_path: Path) -> None:
    # GIVEN files a renderer wrote with a password in them
    staged = tmp_path / "page"
    (staged / "assets").mkdir(parents=True)
    (staged / "index.md").write_text(f"Connected to `{DSN}` on {DB_HOST}.\n")
    (staged / "assets" / "x.svg").write_text(f"<svg><text>{DSN} at {CLIENT_IP}</text></svg>")
    (staged / "assets" / "x.json").write_text(json.dumps({"dsn": DSN, "password": PASSWORD}))
    (staged / "assets" / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")

    # WHEN
    scrubbed = scrub_tree(staged, Redaction(hosts=True), secrets=[PASSWORD])

    # THEN
    assert sorted(p.as_posix() for p in scrubbed.rewritten) == [
        "assets/x.json",
        "assets/x.svg",
        "index.md",
    ]
    assert [p.as_posix() for p in scrubbed.unchecked] == ["assets/plot.png"]
    assert (staged / "index.md").read_text() == (
        "Connected to `postgresql://app:***@<host>:5432/app` on &lt;host&gt;.\n"
    )
    assert (staged / "assets" / "x.svg").read_text() == (
        "<svg><text>postgresql://app:***@&lt;host&gt;:5432/app at &lt;host&gt;</text></svg>"
    )
    assert json.loads((staged / "assets" / "x.json").read_text()) == {
        "dsn": "postgresql://app:***@<host>:5432/app",
        "password": "***",
    }


def test_a_password_the_patterns_miss_stops_the_publication(
    site: Path, session: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a renderer that writes the password bare, where no pattern can see it
    from profiler.report import session_report

    real = session_report.write_report

    def leaky(session_dir: Path, out: Path, **kwargs: Any) -> Any:
        manifest = real(session_dir, out, **kwargs)
        with (out / "index.md").open("a") as page:
            page.write(f"\nThe secret is {PASSWORD}.\n")
        return manifest

    monkeypatch.setattr(session_report, "write_report", leaky)

    # WHEN / THEN
    with pytest.raises(ChecksFailed, match="still holds a password"):
        publish_session(session, site)
    assert not (site / "docs" / "findings" / "checkout-slow").exists()
    assert "checkout-slow" not in (site / "docs" / "findings" / "index.md").read_text()


def test_an_index_without_the_marker_is_refused(site: Path, session: Path) -> None:
    # GIVEN
    (site / "docs" / "findings" / "index.md").write_text("# Findings\n")

    # WHEN / THEN
    with pytest.raises(UsageError, match="findings-index"):
        publish_session(session, site)


def test_a_folder_without_mkdocs_yml_is_not_a_site(tmp_path: Path, session: Path) -> None:
    with pytest.raises(UsageError, match="not a MkDocs site"):
        publish_session(session, tmp_path)


# -- comparisons -----------------------------------------------------------------------------


def test_publish_compare_writes_a_comparison_page(site: Path, session: Path, fixed: Path) -> None:
    # WHEN
    result = publish_comparison(
        session, fixed, site, title="Checkout: before and after", redaction=Redaction(True, True)
    )

    # THEN
    page = site / "docs" / "findings" / "compare-checkout-slow-vs-checkout-fixed" / "index.md"
    assert result.page == page
    text = page.read_text()
    assert text.startswith("# Checkout: before and after\n")
    assert "| idle-in-tx age max | 5.50 s | 0.50 s | -91% | **better** |" in text
    # the verdict leads, the plots overlay both sessions and are files beside the page
    assert text.split("\n")[2].startswith("> **Verdict: better.** longest idle in transaction")
    assert "5.50 s → 0.50 s" in text.split("\n")[2]
    for name in ("compare-connections-held.svg", "compare-idle-in-transaction-age.svg"):
        assert f'<img src="{name}"' in text
        svg = (page.parent / name).read_text()
        assert ">before</text>" in svg and ">after</text>" in svg  # both on one axes
    assert "## Connection-seconds held by code path" in text
    assert "### Resolved" in text
    index = (site / "docs" / "findings" / "index.md").read_text()
    assert "- [Checkout: before and after](compare-checkout-slow-vs-checkout-fixed/index.md)" in (
        index
    )
    assert nav_of(site)[-1]["Findings"][-1] == {
        "Checkout: before and after": "findings/compare-checkout-slow-vs-checkout-fixed/index.md"
    }
    for host in HOSTS:
        assert host not in text
    assert PASSWORD not in text


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_publish_json_and_refusal(site: Path, session: Path) -> None:
    # WHEN
    first = run_publish(str(session), "--site", str(site), "--redact-literals", "--json")
    second = run_publish(str(session), "--site", str(site))

    # THEN
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["page"] == "docs/findings/checkout-slow/index.md"
    assert data["redaction"] == {"hosts": False, "literals": True, "passwords": True}
    assert data["nav_updated"] is True
    assert second.exit_code == ExitCode.USAGE, second.output
    assert "already published" in second.stderr
    assert "--force" in second.stderr
    assert "Traceback" not in second.stderr


def test_cli_publish_defaults_to_the_current_folder(site: Path, session: Path) -> None:
    # WHEN
    result = run_publish(str(session), "--title", "Here", cwd=site)

    # THEN
    assert result.exit_code == 0, result.output
    assert (site / "docs" / "findings" / "checkout-slow" / "index.md").is_file()
    assert "published" in result.stderr


def test_cli_publish_compare(site: Path, session: Path, fixed: Path) -> None:
    result = run_publish("--compare", str(session), str(fixed), "--site", str(site))
    assert result.exit_code == 0, result.output
    assert (site / "docs" / "findings" / "compare-checkout-slow-vs-checkout-fixed").is_dir()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), ExitCode.USAGE, "nothing to publish"),
        (("{session}", "--compare", "{session}", "{session}"), ExitCode.USAGE, "not both"),
        (("{missing}",), ExitCode.BAD_INPUT, "not a profiler session"),
        (("{session}", "--site", "{missing}"), ExitCode.USAGE, "not a MkDocs site"),
    ],
)
def test_cli_publish_errors_are_one_line_and_a_hint(
    site: Path, session: Path, tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    # GIVEN
    values = {"session": str(session), "missing": str(tmp_path / "missing")}
    argv = [arg.format(**values) for arg in args]

    # WHEN
    result = run_publish(*argv, "--site", str(site)) if "--site" not in argv else run_publish(*argv)

    # THEN
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.output
    assert message in lines[0]
    assert lines[1].startswith("next:")


# -- the built site --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_site_builds_strict_with_published_pages(
    site: Path, session: Path, fixed: Path
) -> None:
    # GIVEN
    publish_session(session, site, title="Before", redaction=Redaction(literals=True))
    publish_session(fixed, site, title="After", redaction=Redaction(hosts=True))
    publish_comparison(session, fixed, site, title="Before vs after")

    # WHEN
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"],
        cwd=site,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    # THEN
    assert built.returncode == 0, built.stderr
    out = site / "site"
    assert (out / "findings" / "checkout-slow" / "index.html").is_file()
    assert (out / "findings" / "checkout-slow" / "assets" / "hold-flamegraph.svg").is_file()
    assert (out / "findings" / "compare-checkout-slow-vs-checkout-fixed" / "index.html").is_file()


@pytest.mark.slow
def test_build_site_returns_the_built_folder(site: Path, session: Path) -> None:
    publish_session(session, site)
    built = build_mkdocs_site(site)
    assert built == site / "site"
    assert (built / "findings" / "checkout-slow" / "index.html").is_file()


def test_plotly_ships_once_per_site_and_pages_carry_figure_files(
    site: Path, session: Path, fixed: Path
) -> None:
    # WHEN two sessions and their comparison are published
    publish_session(session, site)
    publish_session(fixed, site)
    publish_comparison(session, fixed, site)

    # THEN the site holds one plotly.min.js, listed nowhere but loaded by timelines.js
    docs = site / "docs"
    assert [p.relative_to(docs).as_posix() for p in docs.rglob("plotly*.js")] == [
        "assets/profiler/plotly.min.js"
    ]
    config = (site / "mkdocs.yml").read_text()
    assert config.count("assets/profiler/timelines.js") == 1
    assert config.count("assets/profiler/profiler.css") == 1
    # AND each page names its figure files, which hold the values a hover shows
    page = docs / "findings" / "checkout-slow" / "index.md"
    figure = re.search(r'data-figure="(assets/connections-held\.json)"', page.read_text())
    assert figure is not None
    data = json.loads((page.parent / figure[1]).read_text())
    assert data["layout"]["xaxis"]["range"][0] == 0
    assert all("%{y" in trace["hovertemplate"] for trace in data["data"])
    assert any(max(trace["y"]) > 0 for trace in data["data"])
