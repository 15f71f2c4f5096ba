"""Building a site: ``mkdocs build --strict``, the check that a published site has no dead link.

Publishing edits a site; building it is separate (``profiler demo`` and the tests
build; a user publishes several pages, then builds once). The build runs this
interpreter's MkDocs in a child process, so the plugins and extensions it finds
are the ones installed with profiler, and only its last warning is kept for the
one-line error: the full log is MkDocs' own to show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from profiler.errors import ChecksFailed, ToolMissingError
from profiler.report.mkdocs_yaml import load_config
from profiler.report.site import open_site


def build_site(
    site_path: Path, *, timeout: float = 600, env: Mapping[str, str] | None = None
) -> Path:
    """``mkdocs build --strict`` of the site at ``site_path`` (with this interpreter's
    MkDocs); the folder built (``site_dir``, default ``site/``). ``env``: variables added
    for the build (the demo names its sessions for the notebook pages).

    ToolMissingError (exit 5) without MkDocs; ChecksFailed (exit 1) when the
    strict build fails, with MkDocs' last warning or error.
    """
    import importlib.util
    import subprocess
    import sys

    site = open_site(site_path)
    if importlib.util.find_spec("mkdocs") is None:
        raise ToolMissingError(
            "mkdocs is not installed", hint="pip install mkdocs-material (a profiler dependency)"
        )
    settings = load_config(site.config)
    built = site.root / str(settings.get("site_dir") or "site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built.resolve())],
        cwd=site.root,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        problems = [
            line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))
        ]
        last = problems[-1] if problems else (done.stderr.strip().splitlines() or ["?"])[-1]
        raise ChecksFailed(
            f"mkdocs build --strict failed: {last}",
            hint=f"run `mkdocs build --strict` in {site.root} to see every message",
        )
    return built
