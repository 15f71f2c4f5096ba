/* profiler */
-- Who we are connected as, and whether that role can read other sessions'
-- query texts in pg_stat_activity (superuser, or member of pg_read_all_stats,
-- which pg_monitor includes). Unchanged since PostgreSQL 10.
SELECT current_user::text                                   AS role_name,
       r.rolsuper                                           AS is_superuser,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS can_read_all_stats,
       current_setting('server_version_num')::int           AS server_version_num,
       current_setting('server_version')                    AS server_version
FROM pg_roles AS r
WHERE r.rolname = current_user
