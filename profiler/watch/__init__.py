"""The flight recorder (``profiler watch``): always on, cheap, and it captures the incident.

Always: ``pg_stat_activity`` with ownership at a low rate, worker membership and
RSS, and cheap stack dumps, kept in memory for the last few minutes
(:mod:`~profiler.watch.ring`). Rules are evaluated live
(:mod:`~profiler.watch.rules`); when one fires, the owning workers get a short
burst of stack dumps and task samples (and memray on memory rules when asked),
written with the buffer prepended as an incident session folder
(:mod:`~profiler.watch.incident`) that ``session show``, ``report`` and
``publish`` read unchanged. The folder's size is capped
(:mod:`~profiler.watch.retention`) and the live state is served to Prometheus
(:mod:`~profiler.watch.metrics`).
"""
