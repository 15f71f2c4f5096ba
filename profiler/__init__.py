"""profiler: attach py-spy and memray to a gateway's workers while sampling PostgreSQL."""

__version__ = "0.1.0"
