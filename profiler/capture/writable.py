"""Whether a worker may write its own capture into a directory.

memray's attach and the task sampler have the worker itself write its file, as
its own user: a directory that user cannot write would fail inside the worker,
after the attach. Both check here first, before anything is injected.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import psutil

from profiler.errors import AttachError
from profiler.targets.namespaces import namespaces_of


def check_writable(directory: Path, pids: Sequence[int]) -> None:
    """The worker writes its own capture: refuse a directory its user cannot write.

    A worker with another filesystem writes in its own scratch folder (checked
    by pre-flight) and its capture is fetched here by us: not checked.
    """
    try:
        info = directory.stat()
    except OSError as exc:
        raise AttachError(f"cannot use {directory}: {exc.strerror}") from None
    for pid in pids:
        if _other_filesystem(pid):
            continue
        try:
            proc = psutil.Process(pid)
            uids, gids = proc.uids(), proc.gids()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if not _may_write(info, uids.effective, {gids.effective, gids.real}):
            raise AttachError(
                f"worker {pid} (uid {uids.effective}) cannot write its capture into {directory}",
                hint="pass -o a directory that user can write (e.g. mkdir -m 1777 DIR)",
            )


def _other_filesystem(pid: int) -> bool:
    try:
        return namespaces_of(pid).other_filesystem
    except AttachError:
        return False


def _may_write(info: os.stat_result, uid: int, gids: set[int]) -> bool:
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IWUSR)
    if info.st_gid in gids:
        return bool(info.st_mode & stat.S_IWGRP)
    return bool(info.st_mode & stat.S_IWOTH)
