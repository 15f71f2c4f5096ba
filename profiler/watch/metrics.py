"""``--metrics-port``: the recorder's live view in Prometheus's exposition format.

Fleets chart and alert in the Prometheus/Grafana they already run; the
recorder keeps no fleet database. A custom collector builds every family from
the latest snapshot at scrape time, so a worker that is gone leaves no stale
series behind. Labels: ``worker_pid`` (empty when no local process owns the
backend) and ``application_name``; ``sum by``/``max by`` in PromQL gives either view.

Families (all gauges but the counter):

* ``profiler_idle_in_transaction_connections{worker_pid,application_name}``
* ``profiler_idle_in_transaction_max_age_seconds{worker_pid,application_name}``
* ``profiler_connections_held{worker_pid}``: checked out of the pool (in a transaction or active)
* ``profiler_pool_capacity``: per worker, when ``--pool-capacity`` says it
* ``profiler_worker_rss_bytes{worker_pid}``
* ``profiler_workers``: the workers followed
* ``profiler_incidents_total{rule}``: incidents written, by rule
* ``profiler_last_snapshot_timestamp_seconds``: staleness of the rest
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from profiler.analysis.activity import idle_in_transaction
from profiler.model import Snapshot
from profiler.watch.rules import checked_out
from profiler.watch.settings import RULES


@dataclass(slots=True)
class LiveState:
    """What the next scrape reports; the recorder updates it, the collector reads it."""

    idle: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    held: dict[int, int] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)
    incidents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    workers: int = 0
    pool_capacity: int | None = None
    last_snapshot: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        idle: dict[tuple[str, str], tuple[int, float]] = {}
        for backend in idle_in_transaction(snapshot):
            owner = snapshot.owners.get(backend.pid)
            worker = "" if owner is None or owner.pid is None else str(owner.pid)
            key = (worker, backend.application_name or "")
            count, oldest = idle.get(key, (0, 0.0))
            idle[key] = (count + 1, max(oldest, backend.state_age_seconds or 0.0))
        held = checked_out(snapshot)
        with self.lock:
            self.idle, self.held = idle, held
            self.last_snapshot = snapshot.taken_at.timestamp()

    def on_rss(self, rss: Mapping[int, int]) -> None:
        with self.lock:
            self.rss = dict(rss)
            self.workers = len(rss)

    def on_incident(self, rule: str) -> None:
        with self.lock:
            self.incidents[rule] = self.incidents.get(rule, 0) + 1


class RecorderCollector(Collector):
    def __init__(self, state: LiveState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        with state.lock:
            idle, held, rss = dict(state.idle), dict(state.held), dict(state.rss)
            incidents, workers = dict(state.incidents), state.workers
            capacity, last = state.pool_capacity, state.last_snapshot
        labels = ["worker_pid", "application_name"]
        count = GaugeMetricFamily(
            "profiler_idle_in_transaction_connections",
            "Backends idle in transaction, by owning worker and application_name.",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "profiler_idle_in_transaction_max_age_seconds",
            "Longest time a backend has been idle in transaction.",
            labels=labels,
        )
        for (worker, app), (n, oldest) in sorted(idle.items()):
            count.add_metric([worker, app], n)
            age.add_metric([worker, app], round(oldest, 3))
        yield count
        yield age
        connections = GaugeMetricFamily(
            "profiler_connections_held",
            "Connections checked out of the pool (in a transaction or active), per worker.",
            labels=["worker_pid"],
        )
        for pid, n in sorted(held.items()):
            connections.add_metric([str(pid)], n)
        yield connections
        if capacity is not None:
            yield GaugeMetricFamily(
                "profiler_pool_capacity",
                "pool_size + max_overflow per worker (--pool-capacity).",
                value=capacity,
            )
        memory = GaugeMetricFamily(
            "profiler_worker_rss_bytes", "Resident memory per worker.", labels=["worker_pid"]
        )
        for pid, value in sorted(rss.items()):
            memory.add_metric([str(pid)], value)
        yield memory
        yield GaugeMetricFamily("profiler_workers", "Workers followed.", value=workers)
        total = CounterMetricFamily(
            "profiler_incidents", "Incidents written, by rule.", labels=["rule"]
        )
        for rule, n in sorted(incidents.items()):
            total.add_metric([rule], n)
        yield total
        if last is not None:
            yield GaugeMetricFamily(
                "profiler_last_snapshot_timestamp_seconds",
                "When the last pg_stat_activity snapshot was taken (epoch).",
                value=last,
            )


class MetricsServer:
    """The HTTP endpoint (``/metrics``) on ``address:port``; port 0 picks a free one."""

    def __init__(self, state: LiveState, port: int, address: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RecorderCollector(state))
        try:
            self._server, self._thread = start_http_server(port, address, self.registry)
        except OSError as exc:
            from profiler.errors import UsageError

            raise UsageError(
                f"cannot serve metrics on {address}:{port}: {exc.strerror}",
                hint="pick another --metrics-port (0: any free port)",
            ) from None
        self.port = int(self._server.server_port)
        self.address = address

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
