"""Where commands write: the -o directory, and never over a file without --force."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from profiler.errors import UsageError


def prepare_directory(output: Path) -> Path:
    """Create ``-o DIR`` (and parents); a clear usage error, not a traceback, when we cannot."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create {output}: {exc.strerror}", hint="pick another -o DIR"
        ) from exc
    return output


def refuse_to_clobber(paths: Iterable[Path], *, force: bool) -> list[Path]:
    """The paths that exist; exit 2 naming the first unless ``force``. Checked before any
    capture starts, so a refusal never costs data."""
    clobbered = [path for path in paths if path.exists()]
    if clobbered and not force:
        raise UsageError(
            f"{clobbered[0]} already exists", hint="pass --force to overwrite, or another -o DIR"
        )
    return clobbered
