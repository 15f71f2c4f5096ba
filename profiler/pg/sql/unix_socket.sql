/* profiler */
-- Where this server's Unix socket is: its socket folders (comma-separated, as
-- configured; an entry starting with @ is an abstract socket) and its port, which
-- names the socket file (.s.PGSQL.<port>). Unchanged since PostgreSQL 9.3.
SELECT current_setting('unix_socket_directories') AS directories,
       current_setting('port')::int AS port
