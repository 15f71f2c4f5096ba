"""Collapsed stacks: ``frame;frame;frame count`` lines, outermost frame first.

The lingua franca of flamegraph tools (flamegraph.pl, inferno, speedscope's
importer) and what ``py-spy record --format raw`` writes. Each frame label is
``name (file:line)``, ``name (file)`` or a bare name, as py-spy prints them.

Counts live in a ``Counter`` keyed by the whole stack, so merging workers is a
sum and the same code path in two workers lands in one tower.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from profiler.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

_LABEL = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*?)(?::(?P<line>\d+))?\)$")


class FrameLabel(NamedTuple):
    """A collapsed-stack frame label split into its parts; ``line`` is 0 when unknown."""

    name: str
    file: str
    line: int


def parse(text: str, *, source: str = "collapsed stacks") -> Counter[str]:
    """``stack count`` lines into a Counter; blank lines are skipped.

    Raises :class:`InputError` naming the first malformed line: a report built
    from half a file would silently lie about where the time went.
    """
    stacks, malformed = _parse(text)
    if malformed:
        number, fragment = malformed[0]
        raise InputError(
            f"{source}: line {number} is not `stack count`: {fragment[:120]!r}",
            hint="collapsed stacks come from `profiler cpu record` or `py-spy --format raw`",
        )
    return stacks


def parse_lenient(text: str) -> tuple[Counter[str], int]:
    """Like :func:`parse`, but drops what cannot be read and says how much.

    For py-spy's own output: a nonblocking sample read while the worker
    changed it can carry a garbage name with a newline in it, which leaves a
    stray fragment such as `` 3`` on a line of its own. One torn sample must
    not cost the whole capture.
    """
    stacks, malformed = _parse(text)
    return stacks, len(malformed)


def _parse(text: str) -> tuple[Counter[str], list[tuple[int, str]]]:
    stacks: Counter[str] = Counter()
    malformed: list[tuple[int, str]] = []
    pending = ""  # a label with a newline in it (generated code's "filename") spans lines
    first = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not pending and not line.strip():
            continue
        first = first or number
        stack, _, count = (pending + line).rstrip().rpartition(" ")
        if stack.strip() and count.isdigit():
            stacks[stack] += int(count)
            pending, first = "", 0
        elif not stack.strip() and count.isdigit():  # a stray count: nothing to join it to
            malformed.append((first, pending + line))
            pending, first = "", 0
        else:
            pending += line + "\\n"
    if pending:
        malformed.append((first, pending))
    return stacks, malformed


def read(path: Path) -> Counter[str]:
    """A collapsed-stacks file, as :func:`parse` reads it."""
    return parse(_text(path), source=str(path))


def read_lenient(path: Path) -> tuple[Counter[str], int]:
    """A collapsed-stacks file, as :func:`parse_lenient` reads it (undecodable bytes replaced)."""
    return parse_lenient(_text(path, errors="replace"))


def _text(path: Path, errors: str = "strict") -> str:
    try:
        return path.read_text(encoding="utf-8", errors=errors)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read {path}: {exc}", hint="check the path and that the file is text"
        ) from exc


def format_lines(stacks: Mapping[str, int]) -> str:
    """Heaviest stack first (ties by stack), so ``head`` of the file is the summary."""
    ordered = sorted(stacks.items(), key=lambda item: (-item[1], item[0]))
    return "".join(f"{stack} {count}\n" for stack, count in ordered if count > 0)


def write(path: Path, stacks: Mapping[str, int]) -> None:
    path.write_text(format_lines(stacks), encoding="utf-8")


def merge(parts: Iterable[Mapping[str, int]]) -> Counter[str]:
    merged: Counter[str] = Counter()
    for part in parts:
        merged.update(part)
    return merged


def frames(stack: str) -> list[str]:
    """The labels of one stack, outermost first."""
    return stack.split(";") if stack else []


def split_label(label: str) -> FrameLabel:
    """``"handler (app/api.py:42)"`` -> ``FrameLabel("handler", "app/api.py", 42)``."""
    found = _LABEL.match(label)
    if found is None:
        return FrameLabel(label, "", 0)
    line = found["line"]
    return FrameLabel(found["name"], found["where"], int(line) if line else 0)


def total(stacks: Mapping[str, int]) -> int:
    return sum(stacks.values())


def inclusive(stacks: Mapping[str, int], function: str) -> int:
    """Samples with ``function`` anywhere on the stack, any file or line.

    py-spy qualifies methods (``Worker.init_process``): a bare ``init_process``
    matches any class's, a qualified name only that class's.
    """
    suffix = "." + function

    def matches(label: str) -> bool:
        name = split_label(label).name
        return name == function or name.endswith(suffix)

    return sum(count for stack, count in stacks.items() if any(map(matches, frames(stack))))


def to_dataframe(stacks: Mapping[str, int], **columns: object) -> pd.DataFrame:
    """One row per stack: ``stack, samples, leaf, depth`` plus constant ``columns``.

    ``columns`` tags rows (``worker_pid=4242``) so several workers concatenate
    into one frame for notebooks. pandas is a dependency of profiler.
    """
    import pandas as pd

    rows = [
        {
            **columns,
            "stack": stack,
            "samples": count,
            "leaf": split_label(frames(stack)[-1]).name if stack else "",
            "depth": len(frames(stack)),
        }
        for stack, count in sorted(stacks.items(), key=lambda item: (-item[1], item[0]))
    ]
    frame: pd.DataFrame = pd.DataFrame(
        rows, columns=[*columns, "stack", "samples", "leaf", "depth"]
    )
    return frame
