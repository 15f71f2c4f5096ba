/* profiler */
-- Alike on purpose: each version file is the whole query, not a diff; pg/queries.load
-- picks one file per server version, so a reader sees exactly what that server runs.
-- Every backend but our own, one row each, with the server's clock taken in the
-- same statement (clock_timestamp(); now() would be the transaction's start), so
-- ages are computed on the server's clock. Times are epoch seconds (float8,
-- sub-microsecond): decoding 5 timestamptz per row was most of our CPU per snapshot. PostgreSQL 13: leader_pid (parallel workers' leader) appears;
-- no query_id yet (14+). query_truncated: the text reached track_activity_query_size
-- (stored texts are cut at size-1 bytes, shorter at a multibyte boundary).
SELECT extract(epoch FROM clock_timestamp())::float8 AS sampled_at,
       a.pid,
       a.leader_pid,
       a.datname::text                      AS datname,
       a.usename::text                      AS usename,
       a.application_name,
       host(a.client_addr)                  AS client_addr,
       a.client_hostname,
       a.client_port,
       extract(epoch FROM a.backend_start)::float8 AS backend_start,
       extract(epoch FROM a.xact_start)::float8 AS xact_start,
       extract(epoch FROM a.query_start)::float8 AS query_start,
       extract(epoch FROM a.state_change)::float8 AS state_change,
       a.wait_event_type,
       a.wait_event,
       a.state,
       a.backend_xid::text                  AS backend_xid,
       a.backend_xmin::text                 AS backend_xmin,
       NULL::bigint                         AS query_id,
       a.query,
       coalesce(octet_length(a.query) >= pg_size_bytes(current_setting('track_activity_query_size')) - 4, false)
                                            AS query_truncated,
       a.backend_type
FROM pg_stat_activity AS a
WHERE a.pid <> pg_backend_pid()
ORDER BY a.pid
