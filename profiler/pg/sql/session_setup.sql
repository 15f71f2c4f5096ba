/* profiler */
-- What the sampler needs to know once per connection: the server's version, the
-- port it listens on (narrows ownership matching to sockets talking to it), our
-- own backend (which every activity query excludes) and role (for the
-- pg_monitor hint). Unchanged since PostgreSQL 10.
SELECT current_setting('server_version_num')::int AS server_version_num,
       inet_server_port()                        AS server_port,
       pg_backend_pid()                          AS backend_pid,
       current_user::text                        AS role_name
