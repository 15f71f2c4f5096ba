"""One session, analysed: episodes, the connection-hold profile, findings and headline numbers.

This is where a session's files meet the pure functions of
:mod:`profiler.analysis`: which samples explain a held connection is decided
here, per worker. A worker the task sampler ran in is explained by its asyncio
tasks (a coroutine suspended at ``await`` is on no thread's stack, so py-spy
alone would blame the idle event loop); any other worker by its py-spy thread
samples. ``session show`` prints a summary, ``session compare`` two of them,
and reports render them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from profiler.analysis import hold_stacks
from profiler.analysis.code_paths import describe, group_by_path
from profiler.analysis.diagnosis import Cause, DiagnosisInput, diagnose
from profiler.analysis.episodes import held_episodes
from profiler.analysis.findings import Evidence, Finding, Thresholds, evaluate
from profiler.analysis.findings.pool import PoolFigures, pool_figures
from profiler.analysis.held_counts import connections_held
from profiler.analysis.stats import percentile

if TYPE_CHECKING:
    import pandas as pd

    from profiler.analysis.diagnosis import Cause
    from profiler.session.reader import Session

TOP_PATHS = 5
HELD_CONNECTIONS_LISTED = 500  # an hour at 1000 backends holds ~400 k: list the longest


@dataclass(frozen=True, slots=True)
class HeldPath:
    """A code path and the connection-seconds it held."""

    path: str
    seconds: float
    share: float
    owner_pids: list[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "seconds": round(self.seconds, 3),
            "share": round(self.share, 4),
            "owner_pids": self.owner_pids,
        }


@dataclass(frozen=True, slots=True)
class Metrics:
    """The numbers a before/after comparison is made of. None: not measured in this session."""

    duration_seconds: float
    workers: int
    transactions: int
    idle_in_transaction: int  # transactions idle in transaction beyond the threshold
    idle_in_transaction_peak: int  # most connections idle in transaction at one snapshot
    idle_age_p50: float | None  # over every transaction seen idle in transaction; 0 if none
    idle_age_p95: float | None
    idle_age_max: float | None
    held_per_worker_mean: float | None  # connections in a transaction, mean over snapshots
    held_per_worker_max: int | None
    connection_seconds_held: float
    throughput_rps: float | None
    load_errors: int | None
    peak_rss_bytes: int | None
    vanished_workers: int
    top_paths: list[HeldPath] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "duration_seconds": round(self.duration_seconds, 3),
            "workers": self.workers,
            "transactions": self.transactions,
            "idle_in_transaction": self.idle_in_transaction,
            "idle_in_transaction_peak": self.idle_in_transaction_peak,
            "idle_age_p50": _rounded(self.idle_age_p50),
            "idle_age_p95": _rounded(self.idle_age_p95),
            "idle_age_max": _rounded(self.idle_age_max),
            "held_per_worker_mean": _rounded(self.held_per_worker_mean),
            "held_per_worker_max": self.held_per_worker_max,
            "connection_seconds_held": round(self.connection_seconds_held, 3),
            "throughput_rps": self.throughput_rps,
            "load_errors": self.load_errors,
            "peak_rss_bytes": self.peak_rss_bytes,
            "vanished_workers": self.vanished_workers,
            "top_paths": [p.to_json() for p in self.top_paths],
        }


@dataclass(slots=True)
class Summary:
    """A session analysed. Frames are kept for reports and notebooks."""

    session: Session
    thresholds: Thresholds
    episodes: pd.DataFrame
    held: pd.DataFrame
    hold_profile: Counter[str]
    hold_owners: dict[str, list[int]]
    attribution: str  # "tasks", "threads", "tasks+threads" or "none"
    findings: list[Finding]
    metrics: Metrics
    pools: list[PoolFigures] = field(default_factory=list)
    attributed: HoldAttribution | None = None
    diagnosis: list[Cause] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``session show --json`` shape (CLI.md): findings, held connections, metrics."""
        manifest = self.session.manifest
        return {
            "name": self.session.name,
            "path": str(self.session.path),
            "started_at": self.session.started_at.isoformat(),
            "ended_at": self.session.ended_at.isoformat(),
            "interrupted": self.session.interrupted,
            "targets": manifest.get("targets", []),
            "attribution": self.attribution,
            "attributed_seconds": {
                kind: round(ms / 1000, 3)
                for kind, ms in sorted((self.attributed.millis if self.attributed else {}).items())
            },
            "thresholds": {
                name: getattr(self.thresholds, name)
                for name in self.thresholds.__dataclass_fields__
            },
            "diagnosis": [cause.to_json() for cause in self.diagnosis],
            "findings": [finding.to_json() for finding in self.findings],
            "held_connections": held_connections(
                self.episodes,
                self.session.start,
                limit=HELD_CONNECTIONS_LISTED,
                kinds=self.attributed.kinds if self.attributed else None,
            ),
            "held_connections_total": len(self.episodes),
            "metrics": self.metrics.to_json(),
            "pools": [pool.to_json() for pool in self.pools],
            "probes": {
                name: {"status": probe.get("status"), "error": probe.get("error")}
                for name, probe in manifest.get("probes", {}).items()
            },
        }


def summarize(session: Session, thresholds: Thresholds | None = None) -> Summary:
    """Everything ``session show`` says about ``session``."""
    thresholds = thresholds or Thresholds()
    from profiler.analysis.attribution import observed_windows

    episodes = held_episodes(session.activity, session_end=session.end, snapshots=session.snapshots)
    # Held as long as seen: in a snapshot, or by the task that held it in a later round.
    episodes = observed_windows(episodes, session.task_samples)
    held = connections_held(session.activity, snapshots=session.snapshots)
    attributed = hold_attribution(session, episodes)
    profile, owners, attribution = attributed.profile, attributed.owners, attributed.sources
    events = session.worker_events
    evidence = Evidence(
        episodes=episodes,
        held=held,
        hold_profile=profile,
        hold_owners=owners,
        hold_kinds=attributed.stack_kinds,
        wait_samples=session.stack_samples,
        rss=session.rss,
        workers=events,
        memory_limits=memory_limits(session.manifest),
        pool_capacity=pool_capacity(session.settings),
        session_start=session.start,
        session_end=session.end,
        pools=session.pool_samples,
        served_rps=None if session.load is None else session.load.rps,
        targets=target_pids(session.manifest),
    )
    findings = evaluate(evidence, thresholds)
    metrics = _metrics(session, thresholds, episodes, held, profile, owners)
    pools = pool_figures(evidence)
    causes = diagnose(
        DiagnosisInput(
            findings=findings,
            per_episode=attributed.per_episode,
            tasks=with_endpoints_only(session.task_samples),
            pools=pools,
            served_rps=evidence.served_rps,
            load_errors=None if session.load is None else session.load.errors,
            wait_samples=session.stack_samples,
            memory_peaks=session.memory_peaks,
            rss=session.rss,
        )
    )
    return Summary(
        session,
        thresholds,
        episodes,
        held,
        profile,
        owners,
        attribution,
        findings,
        metrics,
        pools,
        attributed,
        causes,
    )


def with_endpoints_only(tasks: pd.DataFrame) -> pd.DataFrame:
    """The task samples of requests (an endpoint known): what requests held."""
    if tasks.empty or "endpoint" not in tasks.columns:
        return tasks
    known: pd.DataFrame = tasks[tasks["endpoint"].notna().to_numpy(dtype=bool)]
    return known


@dataclass(frozen=True, slots=True)
class HoldAttribution:
    """The connection-hold profile and how each part of it was attributed.

    ``profile``: ms held per stack (worker-fallback stacks rooted at
    :data:`~profiler.analysis.attribution.FALLBACK_ROOT`); ``owners``: per stack;
    ``sources``: which samples were used (``tasks``, ``threads``, ``tasks+threads``,
    ``none``); ``millis``: ms per attribution (``task``: the task that held the
    connection; ``worker-fallback``: no task was seen holding it, the worker's
    requests meanwhile; ``threads``: py-spy thread dumps of the worker);
    ``kinds``: per episode id, its attribution; ``per_episode``: its stacks
    (``episode_id``, ``stack``, ``millis``, ``kind``), from task samples.
    """

    profile: Counter[str]
    owners: dict[str, list[int]]
    sources: str
    millis: dict[str, int]
    kinds: dict[int, str]
    per_episode: pd.DataFrame | None
    stack_kinds: dict[str, str] = field(default_factory=dict)


def hold_profile(
    session: Session, episodes: pd.DataFrame
) -> tuple[Counter[str], dict[str, list[int]], str]:
    """The connection-hold profile, each worker explained by its best samples: the profile
    (ms held per stack), the owners per stack, and which samples were used."""
    found = hold_attribution(session, episodes)
    return found.profile, found.owners, found.sources


def hold_attribution(session: Session, episodes: pd.DataFrame) -> HoldAttribution:
    """:func:`hold_profile` with each part's attribution (see :class:`HoldAttribution`):
    task samples through :func:`~profiler.analysis.attribution.attribute_tasks` (the
    exact task ↔ backend join, the worker fallback labelled), thread samples through
    :func:`~profiler.analysis.hold_stacks.hold_attribution`."""
    from profiler.analysis.attribution import attribute_tasks

    tasks, threads = attribution_samples(session)
    profile: Counter[str] = Counter()
    owners: dict[str, list[int]] = {}
    used: list[str] = []
    millis: dict[str, int] = {}
    kinds: dict[int, str] = {}
    per_episode = None
    stack_kinds: dict[str, str] = {}
    if not tasks.empty:
        found = attribute_tasks(episodes, tasks, interval=session.task_interval)
        if found.profile:
            used.append("tasks")
        profile.update(found.profile)
        owners.update(found.owners)
        millis.update(found.millis)
        kinds.update(found.kinds)
        per_episode = found.per_episode
        if per_episode is not None:
            stack_kinds.update(zip(per_episode["stack"], per_episode["kind"], strict=True))
    if not threads.empty:
        interval = float(session.settings.get("dump_interval") or 1.0)
        part, part_owners = hold_stacks.hold_attribution(episodes, threads, interval=interval)
        if part:
            used.append("threads")
            millis["threads"] = sum(part.values())
            stack_kinds.update((stack, "threads") for stack in part if stack not in stack_kinds)
        profile.update(part)
        for stack, pids in part_owners.items():
            owners[stack] = sorted(set(owners.get(stack, [])) | set(pids))
    return HoldAttribution(
        profile, owners, "+".join(used) or "none", millis, kinds, per_episode, stack_kinds
    )


def attribution_samples(session: Session) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The samples that explain held connections: task samples (rooted at their endpoint)
    for the workers the task sampler ran in, py-spy thread samples for the others."""
    tasks = with_endpoints(session.task_samples)
    threads = session.stack_samples
    if not tasks.empty and not threads.empty:
        threads = threads[~threads["worker_pid"].isin(set(tasks["worker_pid"].unique().tolist()))]
    return tasks, threads


def with_endpoints(tasks: pd.DataFrame) -> pd.DataFrame:
    """Task samples whose stacks start with their request's endpoint, when known.

    The endpoint becomes the root frame (``endpoint POST /path (handler)``):
    the hold flamegraph then groups a request's time under its endpoint, and
    a request still resolving its dependencies (no frame of its handler yet)
    is counted for the endpoint that will run.
    """
    import pandas as pd

    if tasks.empty or "endpoint" not in tasks.columns or tasks["endpoint"].isna().all():
        return tasks
    known = tasks["endpoint"].notna()
    stacks = tasks["stack"].astype(str)
    rooted = tasks["endpoint"].astype(str) + ";" + stacks
    result: pd.DataFrame = tasks.copy()
    result["stack"] = pd.Categorical(rooted.where(known, stacks))
    return result


def held_connections(
    episodes: pd.DataFrame,
    session_start: float,
    *,
    limit: int | None = None,
    kinds: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The transactions held, longest first (the ``limit`` longest), as JSON rows.

    ``duration`` is what was observed (to the last sighting, in a snapshot or by
    its task), ``duration_max`` the upper bound (to the snapshot that found it
    gone); ``attribution`` how its held time was attributed (``kinds``: episode
    id -> ``task`` or ``worker-fallback``; None when no sample fell inside it).
    """
    if episodes.empty:
        return []
    ordered = episodes.sort_values("duration", ascending=False, kind="stable")
    if limit is not None:
        ordered = ordered.head(limit)
    rows: list[dict[str, Any]] = []
    for record in ordered.to_dict("records"):
        owner = record["owner_pid"]
        via = record.get("owner_via")
        label = record.get("owner_label")
        rows.append(
            {
                "backend_pid": int(record["pid"]),
                "owner_pid": None if _missing(owner) else int(owner),
                "via": None if _missing(via) or not via else str(via),
                "owner_label": None if _missing(label) or not label else str(label),
                "start_offset": round(float(record["start"]) - session_start, 3),
                "duration": round(float(record["duration"]), 3),
                "duration_max": round(float(record["duration_max"]), 3),
                "attribution": (kinds or {}).get(int(record["episode_id"])),
                "open": bool(record["open"]),
                "idle_seconds": round(float(record["idle_seconds"]), 3),
                "max_idle_age": _rounded(record["max_idle_age"]),
                "last_query": record["last_query"],
                "application_name": record["application_name"],
            }
        )
    return rows


def memory_limits(manifest: dict[str, Any]) -> dict[int, int]:
    """Worker pid -> its cgroup memory limit, as ``session run`` recorded it per target."""
    limits: dict[int, int] = {}
    for target in manifest.get("targets", []):
        limit = target.get("memory_limit") if isinstance(target, dict) else None
        if isinstance(limit, int) and limit > 0:
            limits[int(target["pid"])] = limit
    return limits


def target_pids(manifest: dict[str, Any]) -> tuple[int, ...]:
    """The session's worker PIDs, as ``session run`` recorded its targets."""
    pids = {
        int(target["pid"])
        for target in manifest.get("targets", [])
        if isinstance(target, dict) and isinstance(target.get("pid"), int)
    }
    return tuple(sorted(pids))


def pool_capacity(settings: dict[str, Any]) -> int | None:
    value = settings.get("pool_capacity")
    return int(value) if isinstance(value, int) and value > 0 else None


def _metrics(
    session: Session,
    thresholds: Thresholds,
    episodes: pd.DataFrame,
    held: pd.DataFrame,
    profile: Counter[str],
    owners: dict[str, list[int]],
) -> Metrics:
    ages = episodes["max_idle_age"].dropna().sort_values().tolist() if not episodes.empty else []
    if not ages and not session.activity.empty:
        # Sampled and never seen idle in transaction: the ages are 0 s, not unknown, so
        # a fix that removes every idle transaction compares as "better", not "n/a".
        ages = [0.0]
    beyond = sum(age > thresholds.idle_in_transaction_seconds for age in ages)
    known = held[held["owner_pid"].notna()] if not held.empty else held
    per_worker_mean = (
        float(known.groupby("owner_pid")["held"].mean().mean()) if len(known) else None
    )
    per_worker_max = int(known["held"].max()) if len(known) else None
    total_ms = sum(profile.values())
    observed = float(episodes["duration"].sum()) if not episodes.empty else 0.0
    paths: list[HeldPath] = []
    path_owners: dict[str, set[int]] = {}
    for stack, pids in owners.items():
        path_owners.setdefault(describe(stack).display, set()).update(pids)
    for path, millis, _ in group_by_path(profile)[:TOP_PATHS]:
        share = millis / total_ms if total_ms else 0.0
        paths.append(HeldPath(path, millis / 1000, share, sorted(path_owners.get(path, ()))))
    load = session.load
    rss = session.rss
    events = session.worker_events
    vanished = int((events["event"] == "vanished").sum()) if not events.empty else 0
    return Metrics(
        duration_seconds=session.end - session.start,
        workers=len(session.manifest.get("targets", [])),
        transactions=len(episodes),
        idle_in_transaction=int(beyond),
        idle_in_transaction_peak=_idle_peak(session.activity),
        idle_age_p50=percentile(ages, 50),
        idle_age_p95=percentile(ages, 95),
        idle_age_max=ages[-1] if ages else None,
        held_per_worker_mean=None if per_worker_mean is None else round(per_worker_mean, 3),
        held_per_worker_max=per_worker_max,
        connection_seconds_held=observed,
        throughput_rps=None if load is None else load.rps,
        load_errors=None if load is None else load.errors,
        peak_rss_bytes=int(rss["rss_bytes"].max()) if not rss.empty else None,
        vanished_workers=vanished,
        top_paths=paths,
    )


def _idle_peak(activity: pd.DataFrame) -> int:
    """The most client connections idle in transaction at any one snapshot."""
    from profiler.model import IDLE_IN_TRANSACTION

    if activity.empty:
        return 0
    idle = activity["state"].isin(IDLE_IN_TRANSACTION)
    if "backend_type" in activity.columns:
        kind = activity["backend_type"]
        idle &= kind.isna() | (kind == "client backend")
    counts = activity.loc[idle, "taken_at"].value_counts()
    return int(counts.max()) if len(counts) else 0


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _rounded(value: Any) -> float | None:
    if _missing(value) or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), 3)
