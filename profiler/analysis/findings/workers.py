"""Rules about workers: ones that vanished (OOM-killed or not)."""

from __future__ import annotations

from profiler import units
from profiler.analysis.findings.common import _finding, _int, _text
from profiler.analysis.findings.records import Evidence, Finding, Thresholds

EXIT_TEXT = {"oom-killed": "OOM-killed", "killed": "killed", "exited": "exited"}


def worker_vanished(evidence: Evidence, thresholds: Thresholds) -> list[Finding]:
    """Each worker that vanished during the session: critical when OOM-killed."""
    del thresholds  # no threshold: a vanished worker is always news
    events = evidence.workers
    if events.empty or "event" not in events.columns:
        return []
    gone = events[(events["event"] == "vanished").to_numpy(dtype=bool)]
    found = []
    for index in range(len(gone)):
        event = gone.iloc[index]
        pid = int(event["pid"])
        when = float(event["time"])
        exit_kind = _text(event.get("exit")) or "unknown"
        oom = _text(event.get("oom_evidence"))
        replacement = _int(event.get("replacement_pid"))
        last_rss = _int(event.get("last_rss_bytes"))
        details = EXIT_TEXT.get(exit_kind, f"exit {exit_kind}")
        if oom:
            details += f", {oom}"
        at = units.offset(when - evidence.session_start, unit=" s", digits=None)
        title = f"worker {pid} vanished at {at} ({details})"
        title += f"; replaced by {replacement}" if replacement is not None else "; not replaced"
        if last_rss is not None:
            title += f"; last RSS {units.size(last_rss)}"
        found.append(
            _finding(
                "worker-vanished",
                "critical" if exit_kind == "oom-killed" else "warning",
                title,
                {
                    "worker_pid": pid,
                    "time": when,
                    "seconds_into_session": round(when - evidence.session_start, 3),
                    "exit": exit_kind,
                    "oom_evidence": oom,
                    "replacement_pid": replacement,
                    "last_rss_bytes": last_rss,
                    "memory_limit_bytes": evidence.memory_limits.get(pid),
                },
                evidence.session_end - when,  # earliest first
            )
        )
    return found
