"""profiler: attach py-spy and memray to a gateway's workers while sampling PostgreSQL."""

import os

__version__ = "0.1.0"

# pyarrow allocates through mimalloc, which by default keeps freed pages mapped for a
# while. Loading and correlating a session frees large columns one after another, so
# those pages stacked up: summarize() on 3.6 M activity rows peaked anywhere between
# 1.23 and 1.61 GB from run to run, and at 1.08 GB every time when freed pages go back
# at once, in the same time (benchmarks/session_scale.py). Set before pyarrow is first
# imported (pandas imports it); a value the user set wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
