"""The findings page's Markdown, section by section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler import units
from profiler.report import markdown as md
from profiler.report.fold import FOLDED_LABEL
from profiler.report.held_section import held_section
from profiler.report.lead_section import LEAD_PLOTS, lead, load_sentence, merge, severity_counts
from profiler.report.lint_join import lint_seen_holding
from profiler.report.page_text import (
    ATTRIBUTION,
    ATTRIBUTION_KINDS,
    CMDLINE_CHARS,
    MEASURE_POPULATIONS,
    RULE_HEADINGS,
    SKIPPED_EVIDENCE,
    cut,
    header,
    held_seconds,
    is_rows,
    measure_text,
    number_for,
    plural,
    singular,
    utc,
)
from profiler.report.report_assets import ASSETS, MEMORY_FOLD_SHARE, Link, State
from profiler.report.scrub import Scrub

if TYPE_CHECKING:
    from profiler.analysis.findings import Finding
    from profiler.lint import LintResult
    from profiler.report.plots import Plot
    from profiler.session.summary import Summary

PATHS_SHOWN = 5
HOLD_HEIGHT = 420  # px: the embedded flamegraph scrolls inside this


class Page:
    """The Markdown, section by section. Every text from the session goes through ``scrub``."""

    def __init__(
        self,
        summary: Summary,
        scrub: Scrub,
        state: State,
        linted: LintResult | None = None,
        docs_prefix: str | None = None,
    ) -> None:
        self.docs_prefix = docs_prefix
        self.linted = linted
        self.summary = summary
        self.session = summary.session
        self.scrub = scrub
        self.state = state
        self.lines: list[str] = []

    def render(
        self,
        plot_list: list[Plot],
        hold: Link | None,
        cpu: list[Link],
        mem: list[Link],
        timelines: set[str] | frozenset[str] = frozenset(),
        *,
        cpu_work: Link | None = None,
    ) -> str:
        self._title()
        self.add(*lead(self.summary, plot_list, self.scrub, ASSETS, self.docs_prefix, timelines))
        self._findings()
        if self.linted is not None:
            self._lint(self.linted)
        self._measures()
        self._plots([p for p in plot_list if p.name not in LEAD_PLOTS])
        self._paths()
        self._flamegraphs(hold, cpu, mem, cpu_work)
        self.add(*held_section(self.summary, self.scrub))
        self._details()
        text = "\n".join(self.lines).rstrip("\n") + "\n"
        return re.sub(r"\n{3,}", "\n\n", text)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    # -- sections --

    def _title(self) -> None:
        session, metrics = self.session, self.summary.metrics
        name = self.scrub.text(session.name)
        self.add(f"# Session report: {md.escape(name.strip())}", "")
        targets = [t for t in session.manifest.get("targets", []) if isinstance(t, dict)]
        stopped = " It was stopped early." if session.interrupted else ""
        self.add(
            f"{plural(len(targets), 'worker', 'workers')} profiled from {utc(session.started_at)} "
            f"for {units.duration(metrics.duration_seconds)}; "
            f"{plural(metrics.transactions, 'transaction', 'transactions')} seen in "
            f"`pg_stat_activity`.{stopped} {self.scrub.text(load_sentence(session.load))}",
            "",
        )

    def _details(self) -> None:
        """What a reader needs only to reproduce or audit: targets, probes, attribution, files."""
        session = self.session
        manifest = session.manifest
        self.add(
            '<details markdown="1">',
            "<summary>Session details: workers, probes, "
            "attribution, what was folded, files</summary>",
            "",
        )
        host = (manifest.get("host") or {}).get("hostname")
        dsn = manifest.get("dsn")
        where = f" on host {md.code(self.scrub.text(str(host)))}" if host else ""
        against = f" against {md.code(self.scrub.text(str(dsn)))}" if dsn else ""
        source = ATTRIBUTION.get(self.summary.attribution, self.summary.attribution)
        self.add(
            f"Recorded{where}{against}. The code holding connections is attributed from "
            f"{source}.{self._attribution_split()} A transaction counts as held too long when "
            f"idle in transaction over "
            f"{units.duration(self.summary.thresholds.idle_in_transaction_seconds)}.",
            "",
        )
        targets = [t for t in manifest.get("targets", []) if isinstance(t, dict)]
        if targets:
            self.add("| worker | role | command line |", "|---:|---|---|")
            for target in targets:
                cmdline = self.scrub.text(str(target.get("cmdline") or ""))
                self.add(
                    f"| {target.get('pid', '?')} | {md.cell(str(target.get('role') or '-'))} "
                    f"| {md.code(cut(cmdline, CMDLINE_CHARS)) if cmdline else '-'} |"
                )
            self.add("")
        troubles = [
            (name, probe)
            for name, probe in sorted((manifest.get("probes") or {}).items())
            if isinstance(probe, dict) and probe.get("status") in ("failed", "partial")
        ]
        for name, probe in troubles:
            error = self.scrub.text(str(probe.get("error") or "no detail"))
            self.add(f"- Probe `{name}` {probe['status']}: {md.escape(error.strip())}")
        if troubles:
            self.add("")
        self._notes()
        self._files()
        self.add("</details>", "")

    def _attribution_split(self) -> str:
        """How much of the held time each way of attributing it gave: the task that held the
        connection, the worker fallback (labelled), or thread dumps."""
        attributed = self.summary.attributed
        millis = attributed.millis if attributed is not None else {}
        total = sum(millis.values())
        if not total:
            return ""
        parts = [
            f"{units.percent(millis[kind] / total)} {text}"
            for kind, text in ATTRIBUTION_KINDS.items()
            if millis.get(kind)
        ]
        return " Of the held time, " + "; ".join(parts) + "."

    def _findings(self) -> None:
        findings = self.summary.findings
        if not findings:
            return
        merged = merge(findings)
        self.add(
            "## Findings",
            "",
            f"{plural(len(findings), 'finding', 'findings')} ({severity_counts(findings)}) "
            f"as {plural(len(merged), 'rule', 'rules')}: open one for its evidence.",
            "",
        )
        for number, item in enumerate(merged, 1):
            label = RULE_HEADINGS.get(item.rule, item.rule)
            workers = f", {len(item.findings)} workers" if len(item.findings) > 1 else ""
            self.add(
                '<details markdown="1">',
                f"<summary>{number}. {label} ({item.severity}{workers}): rule "
                f"<code>{item.rule}</code></summary>",
                "",
            )
            for finding in item.findings:
                self.add(f"- {md.with_code_spans(self.scrub.title(finding.title))}")
            self.add("")
            for finding in item.findings:
                self._finding(finding)
            self.add("</details>", "")

    def _finding(self, finding: Finding) -> None:
        evidence = {k: v for k, v in finding.evidence.items() if k not in SKIPPED_EVIDENCE}
        flat = [(k, v) for k, v in evidence.items() if not is_rows(v)]
        if flat:
            self.add("| evidence | value |", "|---|---|")
            for key, value in flat:
                self.add(f"| {header(key)} | {self._value(key, value)} |")
            self.add("")
        for key, value in evidence.items():
            if is_rows(value):
                self._rows(key, value)

    def _rows(self, key: str, rows: list[dict[str, Any]]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row if k not in SKIPPED_EVIDENCE))
        self.add(f"**{header(key).capitalize()}** ({len(rows)} listed)", "")
        self.add(
            "| " + " | ".join(header(c) for c in columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|",
        )
        for row in rows:
            cells = [self._value(c, row.get(c)) for c in columns]
            self.add("| " + " | ".join(cells) + " |")
        self.add("")

    def _value(self, key: str, value: Any) -> str:
        """One evidence value as table-cell Markdown, formatted by what its key says it is."""
        if value is None or (isinstance(value, list) and not value):
            text = "-"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, dict):
            text = " · ".join(
                f"{header(k)} {self._value(k, v)}"
                for k, v in value.items()
                if k not in SKIPPED_EVIDENCE
            )
        elif isinstance(value, list):
            joiner, item_key = ("<br>", key) if is_rows(value) else (", ", singular(key))
            text = joiner.join(self._value(item_key, item) for item in value)
        elif isinstance(value, str):
            text = self._string(key, value)
        elif isinstance(value, (int, float)):
            text = number_for(key, value)
        else:
            text = md.cell(self.scrub.text(str(value)))
        return text

    def _string(self, key: str, value: str) -> str:
        """Queries redacted as queries, code paths and command lines as code, the rest text."""
        if "query" in key:
            return md.code(cut(" ".join(self.scrub.query(value).split()), 200))
        text = self.scrub.text(value)
        if key in ("path", "endpoint", "names", "downstream") or "cmdline" in key:
            return md.code(cut(text, CMDLINE_CHARS))
        return md.cell(text)

    def _lint(self, linted: LintResult) -> None:
        """Lint's flagged handlers, each marked with the hold time this session saw for it."""
        seen = lint_seen_holding(linted, self.summary.hold_profile)
        counts = linted.counts()
        self.add("## Handlers flagged by lint", "")
        self.add(
            f"`profiler lint` read {plural(counts['endpoints'], 'endpoint', 'endpoints')} in "
            f"{plural(counts['files'], 'file', 'files')} of "
            f"`{md.escape(Path(linted.path).name)}`: "
            f"{counts['session_holding']} hold a DB session through a dependency, "
            f"{counts['flagged']} flagged. *Seen holding* is the time this session saw each "
            "one holding connections: by its endpoint in task samples, or by its function in "
            "a held code path. A flagged handler not seen here still holds its session across "
            "slow work when traffic reaches it.",
            "",
        )
        if not linted.findings:
            self.add("No handler flagged.", "")
            return
        self.add(
            "| handler | route | file | severity | while the session is open | seen holding |",
            "|---|---|---|---|---|---:|",
        )
        for finding, held_ms in zip(linted.findings, seen, strict=True):
            reasons = "<br>".join(f"{md.cell(r.kind)} (line {r.line})" for r in finding.reasons)
            self.add(
                f"| {md.code(finding.handler)} "
                f"| {md.code(finding.route) if finding.route else '-'} "
                f"| {md.code(f'{finding.file}:{finding.line}')} | {finding.severity} | {reasons} "
                f"| {units.duration(held_ms / 1000) if held_ms else 'no'} |"
            )
        self.add("")

    def _measures(self) -> None:
        from profiler.session.compare import MEASURES

        self.add("## Measures", "", "| measure | value | of what |", "|---|---:|---|")
        for measure in MEASURES:
            value = getattr(self.summary.metrics, measure.name)
            population = md.escape(MEASURE_POPULATIONS.get(measure.name, ""))
            self.add(
                f"| {measure.label} | {measure_text(value, measure.unit)} | {population or '-'} |"
            )
        self.add("")
        if self.summary.pools:
            self.add(
                "What each worker's pool can serve: with a mean hold of H seconds per request "
                "and a pool of P, at most P / H requests per second (the pool read in the "
                "worker, told with `--pool-capacity`, or unknown).",
                "",
                "| worker | capacity |",
                "|---:|---|",
            )
            for pool in self.summary.pools:
                self.add(f"| {pool.worker_pid} | {md.cell(pool.capacity_text())} |")
            self.add("")

    def _plots(self, plot_list: list[Plot]) -> None:
        self.add("## Over time", "")
        self.add(
            "Seconds since the session started on every x axis. Plots with too many points "
            "are thinned (see [what was folded or thinned](#what-was-folded-thinned-or-left-out)).",
            "",
        )
        for plot in plot_list:
            if plot.path is None:
                skipped = md.escape(plot.skipped or "")
                self.add(f"*{md.escape(plot.title)}: not drawn, {skipped}.*", "")
            else:
                self.add(f"![{plot.title}]({ASSETS}/{plot.path.name})", "")

    def _paths(self) -> None:
        from profiler.analysis.code_paths import describe, group_by_path

        profile = self.summary.hold_profile
        self.add("## Code paths by connection-seconds held", "")
        if not profile:
            self.add("No stack sample fell inside a held transaction.", "")
            return
        owners: dict[str, set[int]] = {}
        for stack, pids in self.summary.hold_owners.items():
            owners.setdefault(describe(stack).display, set()).update(pids)
        grouped = group_by_path(profile)
        total = sum(profile.values())
        shown = grouped[:PATHS_SHOWN]
        self.add(
            f"Where each worker was while it held a connection, its time shared among what "
            f"it was doing: {plural(len(grouped), 'code path', 'code paths')}"
            + (f", the {len(shown)} heaviest shown." if len(grouped) > len(shown) else "."),
            "",
            "| held | share | workers | code path |",
            "|---:|---:|---|---|",
        )
        for display, millis, _ in shown:
            workers = ", ".join(str(pid) for pid in sorted(owners.get(display, ()))) or "-"
            self.add(
                f"| {held_seconds(millis / 1000)} | {units.percent(millis / total)} | {workers} "
                f"| {md.code(self.scrub.text(display))} |"
            )
        self.add("")

    def _flamegraphs(
        self, hold: Link | None, cpu: list[Link], mem: list[Link], cpu_work: Link | None
    ) -> None:
        self.add("## Flamegraphs", "")
        self.add(
            "The x axis is not time: a code path is one tower, its width its weight. "
            "Click a frame to zoom, Ctrl-F (or the *Search* button) to find a function.",
            "",
        )
        if hold is not None:
            self.add(
                f"**Where connections were held** (milliseconds held, all workers; "
                f"[open on its own]({hold.asset.path})):",
                "",
                f'<object data="{hold.asset.path}" type="image/svg+xml" class="flamegraph" '
                f'width="100%" height="{HOLD_HEIGHT}">'
                f'<a href="{hold.asset.path}">Connection-hold flamegraph</a></object>',
                "",
            )
        else:
            self.add("No connection-hold flamegraph: nothing was attributed.", "")
        if cpu_work is not None:
            self.add(
                f"**[CPU, work only]({cpu_work.asset.path})** (py-spy, all workers merged; "
                f"samples per stack). The threads that were only waiting are left out, "
                f"{cpu_work.detail}: AnyIO worker threads idle in `wait`, the event loop in "
                "`select`, any thread asleep on a lock, a queue, a pipe or a sleep. A thread "
                "waiting for a pool connection or for a query's result stays: that wait is "
                "the request's time" + self._blocked_tower() + ".",
                "",
            )
        if cpu:
            self.add(
                "**CPU, everything** (py-spy, wall clock, idle included; samples per stack): "
                + ", ".join(f"[{link.label}]({link.asset.path})" for link in cpu)
                + ". Most of their width is threads waiting: AnyIO worker threads idle in "
                "`wait`, the event loop in `select`. "
                + (
                    "The work-only flamegraph is what remains without them"
                    if cpu_work is not None
                    else "The work is in the thin towers beside them" + self._blocked_tower()
                )
                + ".",
                "",
            )
        elif cpu_work is None:
            self.add("No CPU flamegraph: py-spy did not run in this session (`--cpu`).", "")
        if mem:
            self.add(
                "**Memory** live at the peak (memray; frames under "
                f"{units.percent(MEMORY_FOLD_SHARE)} of the peak folded into their parents): "
                + ", ".join(f"[{link.label}]({link.asset.path}) ({link.detail})" for link in mem),
                "",
            )
        else:
            self.add("No memory flamegraph: memray did not capture this session (`--mem`).", "")

    def _blocked_tower(self) -> str:
        """The tower the blocked-event-loop finding names: where the loop slept in a checkout."""
        for finding in self.summary.findings:
            if finding.rule != "blocked-event-loop":
                continue
            paths = finding.evidence.get("code_paths") or []
            if paths and isinstance(paths[0], dict) and paths[0].get("path"):
                path = self.scrub.text(str(paths[0]["path"]))
                return (
                    f"; search for the blocked loop's tower, {md.code(path)}: the event loop "
                    "asleep waiting for a pool connection"
                )
        return ""

    def _notes(self) -> None:
        state = self.state
        self.add("## What was folded, thinned or left out", "")
        lines = []
        for folded in state.folded:
            why = (
                "as every memory flamegraph is"
                if folded.reason == "default"
                else f"to keep it under {units.size(state.cap)}"
            )
            lines.append(
                f"- [{folded.path}]({folded.path}): frames under "
                f"{units.percent(folded.min_share)} of the total folded into their parents, "
                f"{why}: {folded.folded_stacks} of {folded.stacks} stacks end in "
                f"`{FOLDED_LABEL}`."
            )
        for item in state.thinned:
            lines.append(
                f"- [{item.path}]({item.path}), {md.escape(item.series)}: "
                f"{item.points} points drawn "
                f"as {item.kept} (each the {item.how} of a bucket of consecutive points)."
            )
        lines += [f"- {md.escape(note.strip())}" for note in state.notes]
        self.add(*(lines or ["Nothing: every file shows all of its data."]), "")

    def _files(self) -> None:
        self.add("## Files", "")
        if not self.state.assets:
            self.add("No file besides this page.", "")
            return
        self.add("| file | size |", "|---|---:|")
        for asset in sorted(self.state.assets, key=lambda a: a.path):
            self.add(f"| [{asset.path}]({asset.path}) | {units.size(asset.bytes)} |")
        self.add("")
