"""The task sampler injected into workers of the other Pythons it supports: 3.10, 3.12, 3.13.

Our own environment is 3.11, and so is every worker of ``tests/test_task_sampler.py``.
Here the worker is a plain asyncio script run by another interpreter (pyenv's, or
``pythonX.Y`` on PATH; a version not installed is skipped), with nothing of ours in it
(``-I``): gdb loads *our* memray's injector into it and the payload runs there as sent.

asyncio keeps its live tasks in ``_all_tasks`` up to 3.11; from 3.12 in ``_scheduled_tasks``
plus ``_eager_tasks``. An eager task (``eager_task_factory``) is in ``_eager_tasks`` only
while its first step runs; once it awaits it is moved to ``_scheduled_tasks`` like any
other. So the 3.12+ worker has one eager task of each kind: one that suspended, and one
whose first step is still running (blocked in a synchronous call, as a handler calling a
blocking driver before its first ``await`` would be): that one only ``_eager_tasks`` has.
It has no name of its own yet: ``loop.create_task(coro, name=...)`` names the task once the
factory returned, after that first step (CPython gh-128308: so on 3.12, and on 3.13 before
the fix of May 2025); the sampler reports what the worker has, ``Task-N``.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from profiler.capture import task_control, task_inject, task_log
from profiler.capture.processes import stop_pid
from tests.helpers import retry

WORKER = """
import asyncio
import sys
import time


async def sampler_version_marker():
    await asyncio.sleep(600)


async def handler():
    await sampler_version_marker()


async def eager_first_step_marker():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)  # the first step never ends: the loop is stuck here, the GIL free


async def main():
    loop = asyncio.get_running_loop()
    started = [asyncio.create_task(handler(), name=f"lazy-{n}") for n in range(3)]
    if sys.version_info < (3, 12):
        await asyncio.sleep(0)  # every task is now suspended in sampler_version_marker
        print("ready", flush=True)
        await asyncio.gather(*started)
    loop.set_task_factory(asyncio.eager_task_factory)
    started.append(asyncio.create_task(handler(), name="eager-suspended"))
    await asyncio.sleep(0)
    asyncio.create_task(eager_first_step_marker(), name="eager-first-step")


asyncio.run(main())
"""

VERSIONS = ("3.10", "3.12", "3.13")
LAZY = ("lazy-0", "lazy-1", "lazy-2")


def find_interpreter(version: str) -> Path | None:
    """The newest pyenv ``version`` (``$PYENV_ROOT/versions/X.Y.*``), else ``pythonX.Y`` on
    PATH, else None."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    pattern = re.compile(rf"{re.escape(version)}\.(\d+)")
    installed = [
        (int(match.group(1)), folder / "bin" / f"python{version}")
        for folder in root.glob(f"versions/{version}.*")
        if (match := pattern.fullmatch(folder.name))
    ]
    installed = [(patch, python) for patch, python in installed if os.access(python, os.X_OK)]
    if installed:
        return max(installed)[1]
    on_path = shutil.which(f"python{version}")
    return Path(on_path) if on_path else None


@pytest.fixture
def foreign_python() -> Iterator[Callable[[Path, str], subprocess.Popen[str]]]:
    """Start ``code`` with another interpreter, isolated from our environment, until it
    prints ``ready``; every process started is stopped by its PID and reaped at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(python: Path, code: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [str(python), "-I", "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(child)
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], 20)
        line = child.stdout.readline() if readable else ""
        assert line.strip() == "ready", f"{python} did not print 'ready' (got {line!r})"
        return child

    yield start
    for child in started:
        stop_pid(child.pid)
        child.communicate(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_every_task_of_a_worker_of_another_python_is_named_with_its_stack(
    version: str, foreign_python: Callable[[Path, str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    python = find_interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version}: neither $PYENV_ROOT/versions/{version}.* nor on PATH")
    eager = version != "3.10"

    # GIVEN a worker of that Python with named tasks suspended in a marker coroutine (and on
    # 3.12+ an eager task that suspended, and one still in its first step)
    child = foreign_python(python, WORKER)
    threads_before = psutil.Process(child.pid).num_threads()
    path = tmp_path / "tasks.jsonl"

    # WHEN the sampler runs in it for 1 s at 10 Hz
    task_inject.inject(child.pid, path, interval=0.1, duration=1.0)
    assert task_control.wait_for_end([path], timeout=20) == []

    # THEN the header names the worker's Python and the registry it read
    header = task_log.read_header(path)
    assert header["pid"] == child.pid
    assert header["python"].startswith(f"{version}.")
    registry = "_scheduled_tasks+_eager_tasks" if eager else "_all_tasks"
    assert header["task_registry"] == registry
    assert task_log.read_end(path)["reason"] == "duration"  # type: ignore[index]

    # AND every round names every task once, each suspended one in the marker coroutine
    rounds = task_log.read_rounds(path)
    samples = task_log.read(path)
    suspended = [*LAZY, "eager-suspended"] if eager else list(LAZY)
    first_step = samples[samples["leaf"] == "eager_first_step_marker"]
    named = samples.drop(first_step.index)
    assert len(rounds) >= 5
    assert (rounds["tasks"] == 1 + len(suspended) + (1 if eager else 0)).all()  # 1: main()
    assert named.groupby("task", observed=True).size().to_dict() == dict.fromkeys(
        ["Task-1", *suspended], len(rounds)
    )
    held = samples[samples["task"].isin(suspended)]
    assert held["stack"].str.contains("handler (<string>:", regex=False).all()
    assert held["stack"].str.contains("sampler_version_marker (<string>:", regex=False).all()
    assert set(held["leaf"]) == {"sleep"}
    assert set(held["awaiting"]) == {"Future"}

    # AND the eager task still in its first step, only in _eager_tasks, is there too: running
    # (awaiting nothing), under the name the worker gave it so far (see the module docstring)
    assert len(first_step) == (len(rounds) if eager else 0)
    if eager:
        assert first_step["task"].nunique() == 1
        assert re.fullmatch(r"eager-first-step|Task-\d+", str(first_step["task"].iloc[0]))
        assert set(first_step["depth"]) == {1}
        assert first_step["awaiting"].isna().all()

    # AND nothing of the sampler is left running in the worker, which goes on
    retry(
        lambda: psutil.Process(child.pid).num_threads() == threads_before,
        what=f"the worker back to its {threads_before} thread(s)",
    )
    assert child.poll() is None
    assert stop_pid(child.pid)
    _, stderr = child.communicate(timeout=10)
    assert not psutil.pid_exists(child.pid)
    assert "Traceback" not in stderr, stderr
