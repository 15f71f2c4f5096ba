"""``--lend-memray``: attach to a worker whose environment has no memray, without changing it.

memray attaches by injecting its ``_inject`` library (from *our* memray) and
then sending Python code over a local socket that the worker runs; that code
starts with ``import memray``. When the worker's environment has no memray
but its Python matches ours, we send the same code preceded by appending our
site-packages to the end of the worker's ``sys.path``: nothing is installed
anywhere, and the worker's own packages keep precedence (appended, not
prepended). The entries stay until the worker restarts: memray imports
modules lazily while tracking and when it stops (``typing_extensions`` at
tracker start, for one), so removing them after ``import memray`` made the
attach fail.

This drives memray's attach internals (``PAYLOAD``, the control channel), so it
is exact only for the memray version we ship with; pre-flight insists the
versions match on every other path.

Run as ``python -m profiler.memory.lend --pid PID --output FILE --duration S
--method gdb [--aggregate] [--native] [--trace-python-allocators]``, the same
shape as ``memray attach``, so the attach code treats both alike.
"""

from __future__ import annotations

import argparse
import os
import site
import socket
import sys
import sysconfig


def lent_paths() -> list[str]:
    """Where our memray and what it imports (rich, ...) live."""
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    paths.update(p for p in site.getsitepackages() if os.path.isdir(p))
    return sorted(paths)


def lending_payload(payload: str, paths: list[str]) -> str:
    """memray's payload, preceded by our site-packages appended to the worker's ``sys.path``."""
    prefix = (
        "import sys as _profiler_sys\n"
        f"_profiler_sys.path.extend(p for p in {paths!r} if p not in _profiler_sys.path)\n"
    )
    return prefix + payload


def main(argv: list[str] | None = None) -> int:
    import memray
    from memray.commands.attach import PAYLOAD, AttachCommand, recvall

    parser = argparse.ArgumentParser(prog="python -m profiler.memory.lend")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--duration", type=int, required=True)
    parser.add_argument("--method", default="gdb")
    parser.add_argument("--aggregate", action="store_true")
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--trace-python-allocators", action="store_true")
    args = parser.parse_args(argv)

    destination = memray.FileDestination(
        path=os.path.abspath(args.output), overwrite=False, compress_on_exit=True
    )
    file_format = "file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS" if args.aggregate else ""
    tracker_call = (
        f"memray.Tracker(destination=memray.{destination!r},"
        f" native_traces={args.native}, follow_fork=False,"
        f" trace_python_allocators={args.trace_python_allocators},"
        f"{file_format})"
    )
    payload = PAYLOAD.format(tracker_call=tracker_call, mode="FOR_DURATION", duration=args.duration)
    command = AttachCommand()
    client = command.inject_control_channel(args.method, args.pid)
    client.sendall(lending_payload(payload, lent_paths()).encode("utf-8"))
    client.shutdown(socket.SHUT_WR)
    error = recvall(client)
    if error:
        print(f"Failed to start tracking in remote process: {error}", file=sys.stderr)
        return 1
    print(f"memray (lent): tracking PID {args.pid} for {args.duration}s in the background.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
