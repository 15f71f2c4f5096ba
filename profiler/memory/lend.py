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
shape as ``memray attach``, so the attach code treats both alike. It is also
how every local worker is attached (``--no-lend``: memray's payload as is) and
detached (``--detach``): the channel is opened by :mod:`profiler.capture.channel`,
whose fast path loads memray's library at once even in a wedged worker, where
memray's own breakpoint route waits for a thread to allocate.
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
    from memray.commands.attach import PAYLOAD, recvall

    parser = argparse.ArgumentParser(prog="python -m profiler.memory.lend")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--output")
    parser.add_argument("--duration", type=int, default=0)
    parser.add_argument("--no-lend", action="store_true", help="send memray's payload as is")
    parser.add_argument("--detach", action="store_true", help="end a previous attach")
    parser.add_argument("--method", default="gdb")
    parser.add_argument("--aggregate", action="store_true")
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--trace-python-allocators", action="store_true")
    args = parser.parse_args(argv)

    from profiler.capture.channel import open_channel
    from profiler.errors import AttachError

    if args.detach:
        payload = PAYLOAD.format(tracker_call=None, mode="DEACTIVATE", duration=None)
    else:
        destination = memray.FileDestination(
            path=os.path.abspath(args.output), overwrite=False, compress_on_exit=True
        )
        aggregated = "file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS"
        tracker_call = (
            f"memray.Tracker(destination=memray.{destination!r},"
            f" native_traces={args.native}, follow_fork=False,"
            f" trace_python_allocators={args.trace_python_allocators},"
            f"{aggregated if args.aggregate else ''})"
        )
        payload = PAYLOAD.format(
            tracker_call=tracker_call, mode="FOR_DURATION", duration=args.duration
        )
    try:
        client, route = open_channel(args.pid, args.method)
    except AttachError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    if route.route != "fast":
        print(f"memray: breakpoint route ({route.note})", file=sys.stderr)
    sent = payload if args.no_lend or args.detach else lending_payload(payload, lent_paths())
    client.sendall(sent.encode("utf-8"))
    client.shutdown(socket.SHUT_WR)
    error = recvall(client)
    client.close()
    if error:
        verb = "stop" if args.detach else "start"
        print(f"Failed to {verb} tracking in remote process: {error}", file=sys.stderr)
        return 1
    if args.detach:
        return 0
    print(f"memray (lent): tracking PID {args.pid} for {args.duration}s in the background.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
