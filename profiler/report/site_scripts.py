"""The scripts and styles a site needs for findings pages, installed once per site.

``plotly.min.js`` (4.8 MB, from the plotly wheel) is copied once into
``docs/assets/profiler/`` of a site that publishes a findings page, never into a page's own
folder: twenty pages share one file the browser caches. ``timelines.js`` (listed in
``extra_javascript``) loads it only on pages that have a timeline, so the rest of the site
does not pay for it. ``profiler.css`` (``extra_css``) lays the Diagnosis's plots side by
side and wraps notebook code.
"""

from __future__ import annotations

import filecmp
import shutil
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from profiler.report.site import Site

FOLDER = "assets/profiler"
SCRIPT = f"{FOLDER}/timelines.js"
STYLE = f"{FOLDER}/profiler.css"


def install(site: Site) -> list[Path]:
    """Copy the files into the site (when missing or changed) and list them in mkdocs.yml;
    the files written."""
    from profiler.report.mkdocs_yaml import dump_config, load_config
    from profiler.report.site import write_atomic

    target = site.docs / FOLDER
    target.mkdir(parents=True, exist_ok=True)
    written = []
    static = resources.files("profiler.report") / "static"
    sources = [Path(str(static / "timelines.js")), Path(str(static / "profiler.css")), plotly_js()]
    for source in sources:
        copy = target / source.name
        if not copy.is_file() or not filecmp.cmp(source, copy, shallow=False):
            shutil.copyfile(source, copy)
            written.append(copy)
    settings = load_config(site.config)
    changed = False
    for key, entry in (("extra_javascript", SCRIPT), ("extra_css", STYLE)):
        listed = settings.get(key) or []
        if entry not in listed:
            settings[key] = [*listed, entry]
            changed = True
    if changed:
        write_atomic(site.config, dump_config(settings))
    return written


def plotly_js() -> Path:
    """The plotly wheel's own minified bundle: the JS matches the version installed."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")  # found, not imported: its import is slow
    if spec is None or spec.origin is None:
        from profiler.errors import ToolMissingError

        raise ToolMissingError("plotly is not installed", hint="pip install plotly")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"
