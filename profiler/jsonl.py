"""Append-only JSON Lines files: what a capture that may be killed writes.

One record per line, flushed as it is taken: a crash or SIGKILL costs at most
the last, torn line, which :func:`read` drops, and every line before it stays
readable; no footer or index has to be written at the end. The first line is
a header naming the format and its version, so a reader can refuse a file it
does not understand with a clear error instead of a KeyError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from profiler.errors import InputError, UsageError
from profiler.outputs import refuse_to_clobber


@dataclass(frozen=True, slots=True)
class JsonlFile:
    header: dict[str, Any]
    records: list[dict[str, Any]]
    torn_tail: bool  # the last line was cut off (capture killed mid-write)


@dataclass
class JsonlWriter:
    """Writes ``header`` then appends records to ``path``; refuses to overwrite unless told to."""

    path: Path
    format: str
    version: int
    header: dict[str, Any]
    force: bool = False
    _file: IO[str] | None = field(default=None, init=False)

    def __enter__(self) -> JsonlWriter:
        refuse_to_clobber([self.path], force=self.force)
        try:
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot write {self.path}: {exc.strerror}", hint="choose a writable -o path"
            ) from None
        header = {"kind": "header", "format": self.format, "version": self.version}
        self.write({**header, **self.header})
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "use the writer as a context manager"
        self._file.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
        self._file.flush()


def read(path: Path, *, format: str, version: int, hint: str) -> JsonlFile:
    """Header and records of ``path``; a torn last line is dropped, anything else corrupt is an
    :class:`InputError` (``hint`` says which command writes this format)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint="check the path") from None
    lines = text.split("\n")
    torn = bool(lines[-1])  # a complete file ends with a newline
    records = list(_parse(path, lines[:-1]))
    if not records or records[0].get("kind") != "header" or records[0].get("format") != format:
        raise InputError(f"{path} is not a {format} file", hint=hint)
    header = records[0]
    if header.get("version") != version:
        raise InputError(
            f"{path} has format version {header.get('version')}, expected {version}",
            hint="read it with the profiler version that wrote it",
        )
    return JsonlFile(header=header, records=records[1:], torn_tail=torn)


def _parse(path: Path, lines: list[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        yield parse_line(path, number, line)


def parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    """Line ``number`` of ``path`` as a JSON object; an :class:`InputError` naming the line
    when it is not one (for readers that stream a :class:`LineStream` themselves)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise InputError(
            f"{path} line {number} is corrupt", hint="the lines before it are intact"
        ) from None
    return record


@dataclass
class LineStream:
    """The complete lines of a JSONL file after its header, streamed: ``for number, line in ...``.

    Like :func:`profiler.jsonl.read` (a wrong format or version is an
    :class:`InputError`, a torn last line is dropped and sets ``torn_tail``)
    without holding the file or its records in memory. ``header`` is read by
    the first step of the iteration; ``size`` is the file's size when opened.
    """

    path: Path
    format: str
    version: int
    hint: str
    header: dict[str, Any] = field(default_factory=dict)
    torn_tail: bool = False
    size: int = 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        path = self.path
        try:
            handle = path.open("r", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise InputError(
                f"cannot read {path}: {exc.strerror or exc}", hint="check the path"
            ) from None
        with handle:
            # The size before reading: a file that grows meanwhile will not match it, so load()
            # then reads the JSONL rather than a table missing the new lines.
            self.size = os.fstat(handle.fileno()).st_size
            try:
                self.header = self._header(handle.readline())
                for number, line in enumerate(handle, start=2):
                    if not line.endswith("\n"):
                        self.torn_tail = True  # cut off mid-write: dropped, as jsonl.read does
                        break
                    yield number, line
            except UnicodeDecodeError as exc:
                raise InputError(f"cannot read {path}: {exc}", hint="check the path") from None

    def _header(self, first: str) -> dict[str, Any]:
        try:
            header = json.loads(first) if first.endswith("\n") else None
        except json.JSONDecodeError:
            header = None
        if (
            not isinstance(header, dict)
            or header.get("kind") != "header"
            or header.get("format") != self.format
        ):
            raise InputError(f"{self.path} is not a {self.format} file", hint=self.hint)
        if header.get("version") != self.version:
            raise InputError(
                f"{self.path} has format version {header.get('version')}, expected {self.version}",
                hint="read it with the profiler version that wrote it",
            )
        return header
