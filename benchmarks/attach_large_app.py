"""Time to live in a large FastAPI application not written here: a Gradio app.

Gradio (FastAPI + uvicorn, ~1,700 modules imported, ~130 shared objects
mapped, numpy/pandas/pillow/orjson/pydantic-core native extensions) runs in
its own virtual environment, without memray: memray is lent to it
(``profiler.memory.lend``), the task sampler needs nothing. ``--attaches``
rounds of: inject the task sampler (then stop it), attach memray (lent), detach
it, check the app still answers ``/``. Printed: module and shared-object
counts, median and max seconds to live.

Run: python -m venv /tmp/gv && /tmp/gv/bin/pip install gradio
     python benchmarks/attach_large_app.py --python /tmp/gv/bin/python [--attaches 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from profiler.capture import task_control, task_inject
from profiler.capture.processes import stop_pid

APP = """
import os, sys, time
import gradio as gr
demo = gr.Interface(fn=lambda text: text[::-1], inputs="text", outputs="text")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]),
            prevent_thread_lock=True, quiet=True)
print("ready", len(sys.modules), flush=True)
while True:
    time.sleep(1)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def lend(pid: int, *args: str) -> float:
    command = [sys.executable, "-m", "profiler.memory.lend", "--pid", str(pid), *args]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "breakpoint route" not in result.stderr, result.stderr
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="a Python whose environment has gradio")
    parser.add_argument("--attaches", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    app = subprocess.Popen(
        [args.python, "-c", APP, str(port)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert app.stdout is not None
        ready = app.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        maps = Path(f"/proc/{app.pid}/maps").read_text().splitlines()
        objects = {line.split()[-1] for line in maps if ".so" in line.split()[-1]}
        print(f"gradio app PID {app.pid}: {ready[1]} modules, {len(objects)} shared objects")
        out = Path(tempfile.mkdtemp(prefix="attach-large-"))
        out.chmod(0o777)
        sampler, memray = [], []
        for round_ in range(args.attaches):
            path = out / f"tasks-{round_}.jsonl"
            started = time.monotonic()
            task_inject.inject(app.pid, path, interval=0.2, duration=30, lease_seconds=None)
            sampler.append(time.monotonic() - started)
            task_control.request_stop(path)
            capture = out / f"memray-{round_}.bin"
            memray.append(lend(app.pid, "--output", str(capture), "--duration", "60"))
            lend(app.pid, "--detach")
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        for name, values in (("tasks", sampler), ("memray (lent)", memray)):
            print(
                f"{name}: n={len(values)} median {statistics.median(values):.2f} s "
                f"max {max(values):.2f} s"
            )
    finally:
        stop_pid(app.pid)
        app.communicate(timeout=10)


if __name__ == "__main__":
    main()
