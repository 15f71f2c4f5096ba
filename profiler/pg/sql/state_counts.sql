/* profiler */
-- Backends per state for one application_name, with the oldest time in that
-- state, measured on the server's clock (clock_timestamp(), not now(): now() is
-- frozen at transaction start). Bound parameter: application_name. Columns
-- unchanged since PostgreSQL 10.
SELECT coalesce(state, '<unknown>')                                              AS state,
       count(*)::int                                                              AS backends,
       coalesce(extract(epoch FROM max(clock_timestamp() - state_change)), 0)::float8 AS oldest_seconds
FROM pg_stat_activity
WHERE application_name = %(application_name)s
  AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
GROUP BY 1
ORDER BY 1
