"""``profiler report``: a session folder built by hand, its findings page and assets checked.

The session is made with the project's own writers (``RecordingWriter``,
``StackLogWriter``, the RSS JSONL format, a task sampler file, a py-spy
flamegraph in ``cpu/``) at fixed times, so the report is the same bytes on
every run: worker 2001 is an asyncio worker explained by task samples (its
``invoke_tool`` endpoint holds backend 101 idle in transaction across an
httpx call), worker 2002 a threaded one explained by py-spy dumps (its
``render_invoice`` holds backend 102), backend 104 has no known owner. A
password sits in a target's command line, in an owner's command line, in the
py-spy flamegraph's subtitle and in a query: it must reach no output file.

Golden files: ``tests/data/report_golden/index.md`` (the whole page) and
``tests/data/report_golden/connection-states.svg`` (one plot, byte for byte:
it depends on the matplotlib version; regenerate after an upgrade). When a
change to the page is intended, rewrite them with::

    PROFILER_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_session_report.py

and review the diff like code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from profiler import jsonl
from profiler.capture.stack_log import StackLogWriter
from profiler.capture.stacks import Frame, StackSample
from profiler.capture.task_log import FORMAT as TASKS_FORMAT
from profiler.capture.task_log import VERSION as TASKS_VERSION
from profiler.errors import InputError, UsageError
from profiler.memory import rss as rss_log
from profiler.model import ActivitySample, Owner, Snapshot
from profiler.pg.recording import RecordingWriter
from profiler.render.flamegraph import render_svg
from profiler.report import session_report
from profiler.report.session_report import (
    FOLDED_LABEL,
    capped_flamegraph,
    fold_small_frames,
    write_report,
)
from tests.conftest import CliResult
from tests.helpers import client_backend

GOLDEN = Path(__file__).parent / "data" / "report_golden"
UPDATE_GOLDEN = os.environ.get("PROFILER_UPDATE_GOLDEN") == "1"

T0 = 1_750_000_000.0
LAG = 0.25  # the server's clock runs this far behind ours
PASSWORD = "s3cr3t-pw"
CMDLINE_1 = f"gunicorn app:app -k uvicorn --env DATABASE_URL=postgresql://app:{PASSWORD}@db/app"
CMDLINE_2 = f"gunicorn app:sync --env PGPASSWORD={PASSWORD}"
W1 = Owner("process", 2001, CMDLINE_1, pids=(2001,))
W2 = Owner("process", 2002, CMDLINE_2, pids=(2002,))
ENDPOINT_FRAME = "endpoint POST /tools/{tool_id}/invoke (invoke_tool)"
HELD_QUERY = "SELECT tools.* FROM tools WHERE tools.id = 42"
INVOICE_QUERY = "UPDATE invoices SET status = 'paid' WHERE id = 7"
ROLE_QUERY = f"ALTER ROLE app PASSWORD '{PASSWORD}'"


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


# -- building a session ---------------------------------------------------------------------


def backend(
    at: float,
    pid: int,
    *,
    state: str,
    xact: float | None = None,
    changed: float | None = None,
    query: str = "SELECT 1",
) -> ActivitySample:
    """A client backend's row at ``at`` (our clock); times given on our clock too."""
    return client_backend(
        at - LAG,
        pid,
        state=state,
        backend_start=T0 - 100 - LAG,
        query_start=(changed if changed is not None else at) - LAG - 0.05,
        state_change=(changed if changed is not None else at - 0.1) - LAG,
        xact_start=None if xact is None else xact - LAG,
        query=query,
    )


def activity_rows(at: float) -> list[ActivitySample]:
    """Backend 101 (worker 2001) idle in transaction from +1 to +6; 102 (worker 2002) active
    at +3, then idle in transaction until +8; 103 idle throughout; 104 (no owner) idle in
    transaction from +9, still open at the end."""
    k = round(at - T0)
    rows = [backend(at, 103, state="idle")]
    if 1 <= k <= 6:
        rows.append(
            backend(
                at,
                101,
                state="idle in transaction",
                xact=T0 + 0.5,
                changed=T0 + 1,
                query=HELD_QUERY,
            )
        )
    else:
        rows.append(backend(at, 101, state="idle", query=HELD_QUERY))
    if k == 3:
        rows.append(backend(at, 102, state="active", xact=T0 + 2.9, query=INVOICE_QUERY))
    elif 4 <= k <= 8:
        rows.append(
            backend(
                at,
                102,
                state="idle in transaction",
                xact=T0 + 2.9,
                changed=T0 + 3.5,
                query=INVOICE_QUERY,
            )
        )
    if k >= 9:
        rows.append(
            backend(
                at,
                104,
                state="idle in transaction",
                xact=T0 + 8.8,
                changed=T0 + 9,
                query=ROLE_QUERY,
            )
        )
    return rows


def write_activity(path: Path) -> None:
    owners = {101: W1, 102: W2, 103: W1}
    with RecordingWriter(path, {"interval": 1.0, "server_version": 160004}) as out:
        for k in range(1, 11):
            at = T0 + k
            out.add(Snapshot(utc(at), 160004, tuple(activity_rows(at)), owners, {}))


def write_tasks(path: Path, *, extra_stacks: int = 0) -> None:
    """Worker 2001's task sampler: the invoke request holding backend 101 from +0.5 to +7,
    awaiting httpx, and uvicorn's own serving task."""
    header = {
        "kind": "header",
        "format": TASKS_FORMAT,
        "version": TASKS_VERSION,
        "pid": 2001,
        "interval": 0.5,
        "sys_path": ["/srv", "/venv/lib/python3.12/site-packages"],
        "started_at": T0,
    }
    endpoint = {
        "name": "invoke_tool",
        "filename": "/srv/app/handlers.py",
        "line": 118,
        "method": "POST",
        "route": "/tools/{tool_id}/invoke",
    }
    request = [
        ["post", "/venv/lib/python3.12/site-packages/httpx/_client.py", 1859],
        ["call_tool", "/srv/app/tools.py", 49],
        ["invoke_tool", "/srv/app/handlers.py", 120],
    ]
    serve = [["serve", "/venv/lib/python3.12/site-packages/uvicorn/server.py", 63]]
    lines = [header]
    for k in range(1, 15):
        at = T0 + 0.5 * k
        records: list[dict[str, Any]] = [
            {"task_id": 1, "task": "Task-1", "frames": serve, "backends": [], "endpoint": None}
        ]
        if at <= T0 + 7:
            frames = request
            if extra_stacks:  # many distinct tiny stacks under the request: for folding
                frames = [
                    [f"helper_{k}_{i}", "/srv/app/helpers.py", 10 + i] for i in range(3)
                ] + request
            records.append(
                {
                    "task_id": 2,
                    "task": "Task-2",
                    "frames": frames,
                    "backends": [101],
                    "endpoint": endpoint,
                }
            )
        for record in records:
            lines.append(
                {"kind": "task", "taken_at": at, "awaiting": "Future", "running": False, **record}
            )
        lines.append(
            {"kind": "round", "taken_at": at, "tasks": len(records), "skipped": 0, "seconds": 0.001}
        )
    lines.append({"kind": "end", "taken_at": T0 + 7.5, "reason": "stopped"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


INVOICE_FRAMES = (
    Frame(
        "execute",
        "/venv/lib/python3.12/site-packages/sqlalchemy/engine/base.py",
        1412,
        None,
        "sqlalchemy/engine/base.py",
    ),
    Frame("render_invoice", "/srv/app/invoices.py", 77, None, "app/invoices.py"),
    Frame("handle", "/srv/app/sync_app.py", 30, None, "app/sync_app.py"),
)
IDLE_FRAMES = (
    Frame("wait", "/usr/lib/python3.12/threading.py", 355, None, "threading.py"),
    Frame("worker", "/srv/app/sync_app.py", 12, None, "app/sync_app.py"),
)


def write_stacks(path: Path, *, extra_stacks: int = 0) -> None:
    """Worker 2002's py-spy dumps every 0.5 s: rendering an invoice from +3 to +8."""
    with StackLogWriter(path, {"interval": 0.5, "pids": [2002]}) as log:
        for k in range(21):
            at = T0 + 0.5 * k
            frames = INVOICE_FRAMES if T0 + 3 <= at <= T0 + 8 else IDLE_FRAMES
            extra = [
                Frame(f"step_{k}_{i}", "/srv/app/steps.py", 100 + i, None, "app/steps.py")
                for i in range(extra_stacks)
            ]
            log.add(
                StackSample(
                    worker_pid=2002,
                    thread_id=140_000,
                    thread_name="MainThread",
                    taken_at=utc(at),
                    dump_seconds=0.01,
                    active=True,
                    owns_gil=False,
                    frames=(*extra, *frames),
                    os_thread_id=900,
                )
            )


def write_rss(path: Path) -> None:
    with jsonl.JsonlWriter(path, rss_log.FORMAT, rss_log.VERSION, {"interval": 0.5}) as out:
        for k in range(21):
            when = utc(T0 + 0.5 * k).isoformat()
            for pid, base in ((2001, 80), (2002, 120)):
                rss = (base + k) * 2**20
                out.write({"kind": "rss", "pid": pid, "taken_at": when, "rss": rss})


CPU_FLAMEGRAPH = "cpu/flamegraph-2001-20250615T150640Z.svg"
CPU_COLLAPSED = "cpu/collapsed-2001-20250615T150640Z.txt"


IDLE_WORKER_THREAD = (
    "Thread._bootstrap (threading.py:1002);WorkerThread.run (anyio/_backends/_asyncio.py:1113);"
    "Queue.get (queue.py:171);Condition.wait (threading.py:327)"
)
IDLE_LOOP = (
    "serve (uvicorn/server.py:63);BaseEventLoop._run_once (asyncio/base_events.py:1884);"
    "EpollSelector.select (selectors.py:468)"
)
POOL_WAIT_THREAD = (
    "Thread._bootstrap (threading.py:1002);WorkerThread.run (anyio/_backends/_asyncio.py:1124);"
    "get_db (app/deps.py:12);QueuePool._do_get (sqlalchemy/pool/impl.py:155);"
    "Queue.get (sqlalchemy/util/queue.py:199);Condition.wait (threading.py:331)"
)


def write_cpu(directory: Path) -> None:
    """A py-spy flamegraph as ``session run`` leaves it: its subtitle names the command line.
    Recorded with ``--idle``: most samples are threads waiting (an AnyIO worker thread, the
    loop in ``select``); one thread waits for a pool connection."""
    stacks = Counter(
        {
            "serve (uvicorn/server.py:63);invoke_tool (app/handlers.py:120)": 40,
            IDLE_WORKER_THREAD: 120,
            IDLE_LOOP: 40,
            POOL_WAIT_THREAD: 20,
        }
    )
    (directory / "cpu").mkdir()
    (directory / CPU_COLLAPSED).write_text(
        "".join(f"{stack} {count}\n" for stack, count in stacks.items())
    )
    svg = render_svg(
        stacks, title="CPU: worker 2001", subtitle=f"100 Hz, idle included; {CMDLINE_1}"
    )
    (directory / CPU_FLAMEGRAPH).write_text(svg)


def write_manifest(directory: Path) -> None:
    manifest = {
        "format": "profiler-session",
        "version": 1,
        "name": "checkout-slow",
        "started_at": utc(T0).isoformat(),
        "ended_at": utc(T0 + 10.5).isoformat(),
        "interrupted": False,
        "host": {"hostname": "build-host"},
        "tools": {"profiler": "0"},
        "settings": {
            "duration": 10,
            "pg_interval": 1.0,
            "dump_interval": 0.5,
            "task_interval": 0.5,
        },
        "dsn": "postgresql://app@127.0.0.1/app",
        "targets": [
            {"pid": 2001, "role": "worker", "cmdline": CMDLINE_1},
            {"pid": 2002, "role": "worker", "cmdline": CMDLINE_2},
        ],
        "probes": {
            "pg": {"status": "ok", "error": None, "files": ["activity.jsonl"], "facts": {}},
            "stacks": {"status": "ok", "error": None, "files": ["stacks.jsonl"], "facts": {}},
            "rss": {"status": "ok", "error": None, "files": ["rss.jsonl"], "facts": {}},
            "tasks": {
                "status": "ok",
                "error": None,
                "files": ["tasks/tasks-2001.jsonl"],
                "facts": {},
            },
            "cpu": {
                "status": "ok",
                "error": None,
                "files": [CPU_COLLAPSED, CPU_FLAMEGRAPH],
                "facts": {},
            },
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


def build_session(directory: Path, *, extra_stacks: int = 0) -> Path:
    directory.mkdir(parents=True)
    write_activity(directory / "activity.jsonl")
    write_stacks(directory / "stacks.jsonl", extra_stacks=extra_stacks)
    write_tasks(directory / "tasks" / "tasks-2001.jsonl", extra_stacks=extra_stacks)
    write_rss(directory / "rss.jsonl")
    write_cpu(directory)
    write_manifest(directory)
    return directory


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    return build_session(tmp_path / "session")


@pytest.fixture
def report(session_dir: Path, tmp_path: Path) -> tuple[Path, session_report.ReportManifest]:
    out = tmp_path / "report"
    return out, write_report(session_dir, out)


def golden(name: str, actual: str) -> None:
    """Compare with ``GOLDEN/name``, or rewrite it with ``PROFILER_UPDATE_GOLDEN=1``."""
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs from its golden file (see the module docstring)"


# -- the page -------------------------------------------------------------------------------


def test_the_page_and_a_plot_match_their_golden_files(
    report: tuple[Path, session_report.ReportManifest],
) -> None:
    out, _ = report
    golden("index.md", (out / "index.md").read_text(encoding="utf-8"))
    golden("connection-states.svg", (out / "assets" / "connection-states.svg").read_text())


def test_the_same_session_gives_the_same_bytes(session_dir: Path, tmp_path: Path) -> None:
    # GIVEN two reports of one session, WHEN compared, THEN every file is identical
    first = write_report(session_dir, tmp_path / "one")
    second = write_report(session_dir, tmp_path / "two")
    assert [a.to_json() for a in first.assets] == [a.to_json() for a in second.assets]
    for asset in first.assets:
        one = (tmp_path / "one" / asset.path).read_bytes()
        assert one == (tmp_path / "two" / asset.path).read_bytes(), asset.path
    assert (tmp_path / "one/index.md").read_bytes() == (tmp_path / "two/index.md").read_bytes()


def test_the_page_has_every_finding_measure_and_section(
    report: tuple[Path, session_report.ReportManifest], session_dir: Path
) -> None:
    from profiler.session import open as open_session
    from profiler.session.summary import summarize

    out, _ = report
    page = (out / "index.md").read_text()
    summary = summarize(open_session(session_dir))
    rules = {finding.rule for finding in summary.findings}
    assert {"held-code-path", "idle-in-transaction"} <= rules, rules
    for finding in summary.findings:
        # titles are escaped for Markdown: compare without the escapes
        assert _unescaped(finding.title) in _unescaped(page), finding.title
    for section in (
        "## Findings",
        "## Measures",
        "## Over time",
        "## Code paths by connection-seconds held",
        "## Flamegraphs",
        "## Held transactions",
        "## Files",
    ):
        assert section in page
    assert "asyncio task samples, and py-spy thread dumps" in page  # the attribution source
    assert "invoke_tool (app/handlers.py:120)" in page  # a code path, with its worker
    assert "render_invoice (app/invoices.py:77)" in page
    assert "```sql\nUPDATE invoices SET status = 'paid' WHERE id = 7\n```" in page
    findings = page.split("## Findings")[1].split("## Measures")[0]
    assert '{"' not in findings and '": ' not in findings, "evidence is tables, not JSON"


def test_plots_exist_and_are_valid_svg(report: tuple[Path, session_report.ReportManifest]) -> None:
    out, manifest = report
    plots = [asset for asset in manifest.assets if asset.kind == "plot"]
    names = {Path(asset.path).name for asset in plots}
    assert names == {
        "connection-states.svg",
        "idle-in-transaction-age.svg",
        "connections-held.svg",
        "rss.svg",
    }
    for asset in plots:
        root = ET.parse(out / asset.path).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        text = (out / asset.path).read_text()
        assert "<dc:date>" not in text  # no timestamp in the file
    page = (out / "index.md").read_text()
    assert "Heap tracked by memray, per worker: not drawn, no memray capture" in page


def test_every_link_resolves_and_every_asset_is_listed(
    report: tuple[Path, session_report.ReportManifest],
) -> None:
    out, manifest = report
    page = (out / "index.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)\)", page)
    assert targets
    for target in targets:
        assert (out / target).is_file(), target
    listed = set(targets)
    for asset in manifest.assets:
        assert asset.path in listed, asset.path
        assert asset.bytes == (out / asset.path).stat().st_size
    on_disk = {p.relative_to(out).as_posix() for p in (out / "assets").rglob("*") if p.is_file()}
    assert on_disk == {asset.path for asset in manifest.assets}


def test_the_hold_flamegraph_is_rooted_at_the_endpoint(
    report: tuple[Path, session_report.ReportManifest],
) -> None:
    out, manifest = report
    kinds = {asset.kind: asset.path for asset in manifest.assets}
    assert kinds["hold-flamegraph"] == "assets/hold-flamegraph.svg"
    svg = (out / "assets" / "hold-flamegraph.svg").read_text()
    ET.fromstring(svg)  # well-formed
    assert "endpoint POST /tools/{tool_id}/invoke (invoke_tool)" in svg
    assert "ms held" in svg
    assert kinds["cpu-flamegraph"] == "assets/cpu/flamegraph-2001-20250615T150640Z.svg"


def test_the_work_only_cpu_flamegraph_leaves_the_waiting_threads_out(
    report: tuple[Path, session_report.ReportManifest],
) -> None:
    out, manifest = report
    kinds = {asset.kind: asset.path for asset in manifest.assets}
    assert kinds["cpu-work-flamegraph"] == "assets/cpu/work-only.svg"
    svg = (out / "assets/cpu/work-only.svg").read_text()
    ET.fromstring(svg)
    # the idle worker thread and the loop in select are left out, and the subtitle says so
    assert "Queue.get (queue.py:171)" not in svg
    assert "EpollSelector.select (selectors.py:468)" not in svg
    assert "waiting threads left out: 73% of 220 samples" in svg
    # the work and the thread asleep in a pool checkout stay
    assert "invoke_tool (app/handlers.py:120)" in svg
    assert "QueuePool._do_get (sqlalchemy/pool/impl.py:155)" in svg
    # THEN the page links it first, the full py-spy ones after it
    page = (out / "index.md").read_text()
    flamegraphs = page.split("## Flamegraphs")[1]
    work_at = flamegraphs.index("[CPU, work only](assets/cpu/work-only.svg)")
    assert work_at < flamegraphs.index("(assets/cpu/flamegraph-2001-20250615T150640Z.svg)")
    assert "left out, 73% of 220 samples" in flamegraphs


def test_a_real_held_sessions_work_only_flamegraph_shows_the_blocked_loop(
    session_dir: Path, tmp_path: Path
) -> None:
    # GIVEN a session whose cpu/ holds py-spy's merged stacks of a real held session
    # (uvicorn, 2 workers, --idle): 93% of them idle threads, the loop asleep in a checkout
    real = Path(__file__).parent / "data" / "pyspy" / "uvicorn-held-merged.txt"
    merged = session_dir / "cpu" / "collapsed-merged-20250615T150640Z.txt"
    merged.write_text(real.read_text())
    manifest = json.loads((session_dir / "manifest.json").read_text())
    manifest["probes"]["cpu"]["files"].append(f"cpu/{merged.name}")
    (session_dir / "manifest.json").write_text(json.dumps(manifest))
    # WHEN reported
    write_report(session_dir, tmp_path / "out")
    # THEN the merged file is its source (not added to worker 2001's), idle threads left out
    svg = (tmp_path / "out" / "assets/cpu/work-only.svg").read_text()
    assert "waiting threads left out: 93% of 9,717 samples" in svg
    assert "invoke_tool (app/handlers.py:120)" not in svg
    assert "WorkerThread.run (anyio/_backends/_asyncio.py:1113)" not in svg
    assert "Process.pong (uvicorn/supervisors/multiprocess.py:59)" not in svg
    # AND the blocked tower, 658 of the 701 samples left, is the widest thing in it
    tower = re.search(r"<title>list_resources \(profiler/lab/gateway/held.py:95\) \(([\d,]+) ", svg)
    assert tower is not None and tower[1] == "658"


def test_no_password_reaches_any_output_file(
    report: tuple[Path, session_report.ReportManifest],
) -> None:
    out, manifest = report
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == len(manifest.assets) + 1
    for path in files:
        assert PASSWORD not in path.read_text(errors="replace"), path
    page = (out / "index.md").read_text()
    assert "postgresql://app:***@db/app" in page  # the command line is kept, masked
    assert "ALTER ROLE app PASSWORD '***'" in page
    assert (
        "postgresql://app:***@db/app" in (out / kinds_path(manifest, "cpu-flamegraph")).read_text()
    )


def kinds_path(manifest: session_report.ReportManifest, kind: str) -> str:
    return next(asset.path for asset in manifest.assets if asset.kind == kind)


def test_a_redaction_applies_to_queries_and_text(session_dir: Path, tmp_path: Path) -> None:
    from profiler.report.redact import Redaction

    # GIVEN literals and hosts redacted
    out = tmp_path / "redacted"
    write_report(session_dir, out, redaction=Redaction(literals=True, hosts=True))
    page = (out / "index.md").read_text()
    # THEN no literal of a query and no host is left on the page
    assert "UPDATE invoices SET status = ? WHERE id = ?" in page
    assert "'paid'" not in page
    assert "127.0.0.1" not in page
    assert PASSWORD not in page


def test_a_non_empty_output_needs_force(session_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not empty"):
        write_report(session_dir, out)
    # WHEN forced, THEN the report replaces only its own files
    write_report(session_dir, out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "index.md").is_file()


def test_a_folder_that_is_no_session_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a profiler session"):
        write_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_session_with_no_probe_data_still_gets_a_page(tmp_path: Path) -> None:
    # GIVEN a killed session that recorded nothing but its manifest
    session = tmp_path / "session"
    session.mkdir()
    write_manifest(session)
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["ended_at"] = None
    (session / "manifest.json").write_text(json.dumps(manifest))
    (session / "cpu").mkdir()
    # WHEN reported
    report = write_report(session, tmp_path / "out")
    # THEN the page says what is missing, and no plot or flamegraph is written
    page = (tmp_path / "out" / "index.md").read_text()
    assert report.assets == []
    assert "It was stopped early" in page
    assert "Healthy: in 0 s, no transaction sat idle" in page
    assert "Client connections by state: not drawn" in page
    assert "No connection-hold flamegraph" in page
    assert "No file besides this page." in page


# -- the size cap ---------------------------------------------------------------------------


def test_folding_keeps_the_total_and_marks_what_it_folded() -> None:
    profile = Counter({"a;b;c": 900, **{f"a;d{i};e": 1 for i in range(100)}})
    folded, cut = fold_small_frames(profile, 0.005)
    assert sum(folded.values()) == sum(profile.values())
    assert folded["a;b;c"] == 900
    assert folded[f"a;{FOLDED_LABEL}"] == 100
    assert cut == 100
    assert fold_small_frames(profile, 0.0) == (profile, 0)


def test_a_flamegraph_over_the_cap_is_folded_until_it_fits() -> None:
    # 800 stacks each wide enough to be drawn (render_svg drops frames under 0.1 px)
    profile = Counter({f"root;mid_{i};leaf_{i} (app/x.py:{i})": 10 for i in range(800)})
    profile["root;hot (app/x.py:1)"] = 8_000
    whole = render_svg(profile, title="t", unit="bytes")
    cap = 60_000
    assert len(whole) > cap
    capped = capped_flamegraph(profile, title="t", subtitle=None, unit="bytes", cap=cap)
    assert capped.svg is not None and len(capped.svg) <= cap
    assert capped.min_share > 0 and capped.folded_stacks > 0
    assert FOLDED_LABEL in capped.svg
    assert "folded into their parents" in capped.svg  # the file says so itself


def test_the_page_says_what_was_folded_under_a_small_cap(tmp_path: Path) -> None:
    # GIVEN a session whose hold profile has many small stacks (its flamegraph weighs
    # ~25 kB), and a 20 kB cap (the plots weigh under 17 kB)
    session = build_session(tmp_path / "session", extra_stacks=3)
    cap = 20_000
    manifest = write_report(session, tmp_path / "out", size_cap=cap)
    # THEN every file fits, the hold flamegraph was folded, and the page says so
    page = (tmp_path / "out" / "index.md").read_text()
    for asset in manifest.assets:
        assert asset.bytes <= cap, asset
    folded = {item.path: item for item in manifest.folded}
    assert "assets/hold-flamegraph.svg" in folded, manifest.to_json()
    item = folded["assets/hold-flamegraph.svg"]
    assert item.reason == "cap" and item.folded_stacks > 0
    assert "## What was folded, thinned or left out" in page
    assert "[assets/hold-flamegraph.svg](assets/hold-flamegraph.svg): frames under" in page
    assert "to keep it under" in page


def test_long_series_are_thinned_and_the_page_says_so(session_dir: Path, tmp_path: Path) -> None:
    manifest = write_report(session_dir, tmp_path / "out", max_points=5)
    thinned = {(item.path, item.series) for item in manifest.thinned}
    assert ("assets/rss.svg", "worker 2001") in thinned
    assert ("assets/connection-states.svg", "idle") in thinned
    page = (tmp_path / "out" / "index.md").read_text()
    assert "[assets/rss.svg](assets/rss.svg), worker 2001: 21 points drawn as 5" in page


# -- memray ---------------------------------------------------------------------------------

MEMRAY_SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    import memray


    def report_marker_big():
        held = bytearray(30 * 2**20)
        time.sleep(0.05)
        return held


    with memray.Tracker(sys.argv[1]):
        kept = report_marker_big()
        time.sleep(0.05)
    """
)


@pytest.mark.slow
def test_a_memray_capture_gives_a_heap_plot_and_a_capped_flamegraph(tmp_path: Path) -> None:
    # GIVEN a session with a real memray capture, as `session run --mem` leaves it
    session = build_session(tmp_path / "session")
    script = tmp_path / "capture.py"
    script.write_text(MEMRAY_SCRIPT)
    (session / "mem").mkdir()
    capture = session / "mem" / "memray-2001.bin"
    subprocess.run([sys.executable, str(script), str(capture)], check=True, timeout=120)

    # WHEN reported
    out = tmp_path / "out"
    manifest = write_report(session, out)

    # THEN our own memory flamegraph names the allocating function, and the heap is plotted
    memory = [asset for asset in manifest.assets if asset.kind == "memory-flamegraph"]
    assert len(memory) == 1, manifest.to_json()
    svg = (out / memory[0].path).read_text()
    ET.fromstring(svg)
    assert "report_marker_big" in svg
    assert "assets/memray-heap.svg" in {asset.path for asset in manifest.assets}
    page = (out / "index.md").read_text()
    assert "**Memory** live at the peak (memray; frames under 0.1% of the peak folded" in page
    assert "no memray capture" not in page


# -- the command ----------------------------------------------------------------------------


def test_cli_writes_the_report_and_prints_its_manifest(
    session_dir: Path, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    out = tmp_path / "out"
    result = run_cli("report", str(session_dir), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["page"] == str(out / "index.md")
    assert {"path", "bytes", "kind"} <= set(data["assets"][0])
    assert data["folded"] == [] and data["thinned"] == []
    assert (out / "index.md").is_file()
    # AND the default output is DIR/report
    default = run_cli("report", str(session_dir))
    assert default.exit_code == 0, default.output
    assert default.stdout.strip() == str(session_dir / "report" / "index.md")


def test_cli_a_missing_session_is_exit_7_in_one_line(
    tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    result = run_cli("report", str(tmp_path / "nowhere"))
    assert result.exit_code == 7, result.output
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a profiler session" in errors[0], result.output
    assert not (tmp_path / "nowhere").exists()


def test_cli_refuses_a_non_empty_output_without_force(
    session_dir: Path, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = run_cli("report", str(session_dir), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert "is not empty" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.stderr
    forced = run_cli("report", str(session_dir), "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.output


def _unescaped(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text).replace("&lt;", "<").replace("&gt;", ">")
