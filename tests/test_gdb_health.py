"""The gdb diagnosis matches what gdb really does on this host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from profiler.capture.gdb_health import broken_inferior_calls, cpu_has_amx
from profiler.capture.tools import find_tool


def test_amx_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    with_amx = tmp_path / "amx"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile xsave\n")
    without = tmp_path / "plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 xsave\n")
    assert cpu_has_amx(with_amx) is True
    assert cpu_has_amx(without) is False
    assert cpu_has_amx(tmp_path / "missing") is False


@pytest.mark.slow
def test_the_diagnosis_agrees_with_a_real_inferior_call(python_process) -> None:
    gdb = find_tool("gdb")  # the one memray would be handed
    if gdb is None:
        pytest.skip("no gdb here")
    pid = python_process("import time\nprint('ready', flush=True)\ntime.sleep(60)\n").pid
    said = subprocess.run(
        [str(gdb), "-batch", "-p", str(pid), "-ex", "call (int)getpid()"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    called = f"$1 = {pid}" in said
    assert called == (broken_inferior_calls() is None), said[-500:]
