/* profiler */
-- Who blocks whom, for backends waiting on a heavyweight lock only.
-- pg_blocking_pids() takes the lock manager's partition locks, so the sampler
-- runs this at most once a second and only when a sampled backend waits on a
-- Lock. Unchanged since PostgreSQL 9.6.
SELECT a.pid, pg_blocking_pids(a.pid) AS blocked_by
FROM pg_stat_activity AS a
WHERE a.wait_event_type = 'Lock'
  AND a.pid <> pg_backend_pid()
