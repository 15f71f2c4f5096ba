"""The findings page's Markdown, section by section."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.analysis.text import offset
from profiler.report import markdown as md
from profiler.report.episode_stacks import attributed_stacks, stacks_during
from profiler.report.fold import FOLDED_LABEL
from profiler.report.lint_join import lint_seen_holding
from profiler.report.page_text import (
    ATTRIBUTION,
    ATTRIBUTION_KINDS,
    CMDLINE_CHARS,
    QUERY_CHARS,
    RULE_HEADINGS,
    SEVERITY_ORDER,
    SKIPPED_EVIDENCE,
    cut,
    duration,
    fenced,
    header,
    held_seconds,
    is_rows,
    measure_text,
    missing,
    number_for,
    percent_text,
    plural,
    singular,
    size,
    utc,
)
from profiler.report.report_assets import ASSETS, MEMORY_FOLD_SHARE, Link, State
from profiler.report.scrub import Scrub

if TYPE_CHECKING:
    from profiler.analysis.findings import Finding
    from profiler.lint import LintResult
    from profiler.report.plots import Plot
    from profiler.session.summary import Summary

EPISODES_SHOWN = 20
PATHS_SHOWN = 20


class Page:
    """The Markdown, section by section. Every text from the session goes through ``scrub``."""

    def __init__(
        self, summary: Summary, scrub: Scrub, state: State, linted: LintResult | None = None
    ) -> None:
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
    ) -> str:
        self._title()
        self._findings()
        if self.linted is not None:
            self._lint(self.linted)
        self._measures()
        self._plots(plot_list)
        self._paths()
        self._flamegraphs(hold, cpu, mem)
        self._episodes()
        self._notes()
        self._files()
        text = "\n".join(self.lines).rstrip("\n") + "\n"
        return re.sub(r"\n{3,}", "\n\n", text)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    # -- sections --

    def _title(self) -> None:
        session, metrics = self.session, self.summary.metrics
        manifest = session.manifest
        name = self.scrub.text(session.name)
        self.add(f"# Session report: {md.escape(name.strip())}", "")
        targets = [t for t in manifest.get("targets", []) if isinstance(t, dict)]
        host = (manifest.get("host") or {}).get("hostname")
        dsn = manifest.get("dsn")
        where = f" on host {md.code(self.scrub.text(str(host)))}" if host else ""
        against = f" against {md.code(self.scrub.text(str(dsn)))}" if dsn else ""
        stopped = (
            " It was stopped early: the data ends where it stopped." if session.interrupted else ""
        )
        transactions = plural(metrics.transactions, "transaction", "transactions")
        source = ATTRIBUTION.get(self.summary.attribution, self.summary.attribution)
        self.add(
            f"This session profiled {plural(len(targets), 'worker', 'workers')}{where}{against}, "
            f"from {utc(session.started_at)} for {duration(metrics.duration_seconds)}.{stopped} "
            f"{transactions} were seen in `pg_stat_activity`; the code holding connections is "
            f"attributed from {source}.{self._attribution_split()} "
            f"A transaction counts as held too long when idle in transaction over "
            f"{duration(self.summary.thresholds.idle_in_transaction_seconds)}.",
            "",
        )
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

    def _attribution_split(self) -> str:
        """How much of the held time each way of attributing it gave: the task that held the
        connection, the worker fallback (labelled), or thread dumps."""
        attributed = self.summary.attributed
        millis = attributed.millis if attributed is not None else {}
        total = sum(millis.values())
        if not total:
            return ""
        parts = [
            f"{percent_text(millis[kind] / total)} {text}"
            for kind, text in ATTRIBUTION_KINDS.items()
            if millis.get(kind)
        ]
        return " Of the held time, " + "; ".join(parts) + "."

    def _findings(self) -> None:
        findings = self.summary.findings
        self.add("## Findings", "")
        if not findings:
            self.add("No findings: nothing crossed a threshold.", "")
            return
        counts = Counter(finding.severity for finding in findings)
        parts = [f"{counts[s]} {s}" for s in SEVERITY_ORDER if counts[s]]
        self.add(
            f"{plural(len(findings), 'finding', 'findings')}, most important first: "
            f"{', '.join(parts)}.",
            "",
        )
        for number, finding in enumerate(findings, 1):
            self._finding(number, finding)

    def _finding(self, number: int, finding: Finding) -> None:
        # A short heading (the table of contents stays readable), the full title under it.
        label = RULE_HEADINGS.get(finding.rule, finding.rule)
        title = md.with_code_spans(self.scrub.title(finding.title))
        self.add(f"### {number}. {label} ({finding.severity})", "")
        self.add(f"**{title}**", "")
        self.add(f"rule `{finding.rule}`", "")
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
                f"| {duration(held_ms / 1000) if held_ms else 'no'} |"
            )
        self.add("")

    def _measures(self) -> None:
        from profiler.session.compare import MEASURES

        self.add("## Measures", "", "| measure | value |", "|---|---:|")
        for measure in MEASURES:
            value = getattr(self.summary.metrics, measure.name)
            self.add(f"| {measure.label} | {measure_text(value, measure.unit)} |")
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
                f"| {held_seconds(millis / 1000)} | {percent_text(millis / total)} | {workers} "
                f"| {md.code(self.scrub.text(display))} |"
            )
        self.add("")

    def _flamegraphs(self, hold: Link | None, cpu: list[Link], mem: list[Link]) -> None:
        self.add("## Flamegraphs", "")
        self.add(
            "Interactive SVG files: open one on its own to zoom (click) and search; "
            "the x axis is not time, a code path is one tower.",
            "",
        )
        if hold is not None:
            self.add(
                f"- [Connection-hold flamegraph]({hold.asset.path}): the stacks of workers "
                f"while they held a connection, weighted by milliseconds held.",
                "",
                f"![Connection-hold flamegraph]({hold.asset.path})",
                "",
            )
        else:
            self.add("- No connection-hold flamegraph: nothing was attributed.", "")
        if cpu:
            self.add(
                "- CPU (py-spy, wall clock, idle included): "
                + ", ".join(f"[{link.label}]({link.asset.path})" for link in cpu)
            )
        else:
            self.add("- No CPU flamegraph: py-spy did not run in this session (`--cpu`).")
        if mem:
            self.add(
                "- Memory live at the peak (memray; frames under "
                f"{percent_text(MEMORY_FOLD_SHARE)} of the peak folded into their parents): "
                + ", ".join(f"[{link.label}]({link.asset.path}) ({link.detail})" for link in mem)
            )
        else:
            self.add("- No memory flamegraph: memray did not capture this session (`--mem`).")
        self.add("")

    def _episodes(self) -> None:
        episodes = self.summary.episodes
        self.add("## Held connections", "")
        if episodes.empty:
            self.add("No transaction was seen in `pg_stat_activity`.", "")
            return
        longest = episodes.sort_values(
            ["duration", "episode_id"], ascending=[False, True], kind="stable"
        ).head(EPISODES_SHOWN)
        self.add(
            f"The {len(longest)} longest of {plural(len(episodes), 'transaction', 'transactions')}"
            f" seen, each held as long as it was seen open (in a snapshot, or by the task "
            f"holding it), with where it was held: the task that held it where the task "
            f"sampler named its backend; else, marked as the worker fallback, the worker's "
            f"requests meanwhile; in a worker without the task sampler, its thread dumps "
            f"(from {ATTRIBUTION.get(self.summary.attribution, self.summary.attribution)}).",
            "",
        )
        stacks = stacks_during(self.session, longest)
        attributed = self.summary.attributed
        from_tasks = attributed_stacks(attributed, longest) if attributed is not None else {}
        start = self.session.start
        for number, row in enumerate(longest.to_dict("records"), 1):
            owner = None if missing(row["owner_pid"]) else int(row["owner_pid"])
            held = f"{row['duration']:.1f} s"
            if row["open"]:
                held += " (still open)"
            elif round(row["duration_max"], 1) > round(row["duration"], 1):
                held += f" (at most {row['duration_max']:.1f} s)"  # gone by the next snapshot
            who = f"worker {owner}" if owner is not None else "owner unknown"
            self.add(f"### {number}. Backend {int(row['pid'])} ({who}): held {held}", "")
            longest_idle = "-" if missing(row["max_idle_age"]) else f"{row['max_idle_age']:.1f} s"
            application = row.get("application_name")
            app = (
                "-"
                if missing(application) or not application
                else md.code(self.scrub.text(str(application)))
            )
            self.add(
                "| started | held | idle in transaction | longest idle | snapshots | application |",
                "|---:|---:|---:|---:|---:|---|",
                f"| {offset(row['start'] - start, unit=' s')} | {held} "
                f"| {row['idle_seconds']:.1f} s "
                f"| {longest_idle} | {int(row['samples'])} | {app} |",
                "",
            )
            cmdline = row.get("owner_cmdline")
            if owner is not None and not missing(cmdline) and cmdline:
                text = cut(self.scrub.text(str(cmdline)), CMDLINE_CHARS)
                self.add(f"Owner: worker {owner}, {md.code(text)}", "")
            query = row.get("last_query")
            if missing(query) or not query:
                self.add("Last query: not seen.", "")
            else:
                self.add(
                    "Last query:",
                    "",
                    *fenced(cut(self.scrub.query(str(query)), QUERY_CHARS), "sql"),
                    "",
                )
            self._episode_stacks(int(row["episode_id"]), owner, stacks, from_tasks)

    def _episode_stacks(
        self,
        episode_id: int,
        owner: int | None,
        threads: dict[int, list[tuple[str, int, float]]],
        from_tasks: dict[int, list[tuple[str, float, float]]],
    ) -> None:
        """Where one transaction was held: its holder task's stacks, the worker fallback's
        (labelled), or, in a worker without the task sampler, its thread dumps."""
        attributed = self.summary.attributed
        kind = attributed.kinds.get(episode_id) if attributed is not None else None
        who = f"worker {owner}" if owner is not None else "owner unknown"
        if episode_id in from_tasks:
            heading = (
                "Stacks of the task that held it (the task ↔ backend join):"
                if kind == "task"
                else "No task was seen holding it; the worker's requests meanwhile "
                "(worker fallback, not the holder):"
            )
            self.add(heading, "", "| share | held | code path |", "|---:|---:|---|")
            for path, millis, share in from_tasks[episode_id]:
                self.add(
                    f"| {percent_text(share)} | {held_seconds(millis / 1000)} "
                    f"| {md.code(self.scrub.text(path))} |"
                )
            self.add("")
        elif threads.get(episode_id):
            self.add(
                f"Top stacks of {who} meanwhile:",
                "",
                "| share | samples | code path |",
                "|---:|---:|---|",
            )
            for stack, samples, share in threads[episode_id]:
                self.add(
                    f"| {percent_text(share)} | {samples} | {md.code(self.scrub.text(stack))} |"
                )
            self.add("")
        elif owner is not None:
            self.add(f"No stack sample of {who} fell in what was seen of it.", "")

    def _notes(self) -> None:
        state = self.state
        self.add("## What was folded, thinned or left out", "")
        lines = []
        for folded in state.folded:
            why = (
                "as every memory flamegraph is"
                if folded.reason == "default"
                else f"to keep it under {size(state.cap)}"
            )
            lines.append(
                f"- [{folded.path}]({folded.path}): frames under "
                f"{percent_text(folded.min_share)} of the total folded into their parents, "
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
            self.add(f"| [{asset.path}]({asset.path}) | {size(asset.bytes)} |")
        self.add("")
