"""The inside strategy: exact command lines that profile a worker from within its container.

When the workers cannot be reached by host PID (a pod on another node, no
root on the host), the tools run next to them: ``docker exec`` /
``kubectl exec`` runs py-spy (a static binary: copied in when the image has
none) or the image's memray on the worker's PID *inside* the container (1 for
a single-process image, else see ``ps`` there), and ``docker cp`` /
``kubectl cp`` copies the results out. py-spy and memray need
``SYS_PTRACE`` in the container for this (see :mod:`profiler.capture.ptrace`).

Nothing here runs anything: callers print the plans, tests compare them.
"""

from __future__ import annotations

from profiler.containers import docker, kubernetes
from profiler.errors import UsageError

PYSPY_INSIDE = "/tmp/py-spy"  # noqa: S108 - a path in the container, where we copy py-spy
RESULTS_INSIDE = "/tmp"  # noqa: S108 - a path in the container; /dev/shm when read-only
ACTIONS = ("cpu-dump", "cpu-record", "mem-attach")
DEFAULT_SECONDS = 30


def _tool_argv(action: str, pid: int, seconds: int, results: str) -> tuple[list[str], str | None]:
    """What runs inside for ``action``, and the file it leaves there (None: prints only)."""
    if action == "cpu-dump":
        return [PYSPY_INSIDE, "dump", "--pid", str(pid)], None
    if action == "cpu-record":
        out = f"{results}/profile-{pid}.svg"
        argv = [PYSPY_INSIDE, "record", "--pid", str(pid), "-d", str(seconds), "-o", out]
        return argv, out
    if action == "mem-attach":
        out = f"{results}/memray-{pid}.bin"
        argv = ["python", "-m", "memray", "attach", "--duration", str(seconds)]
        return [*argv, "-o", out, str(pid)], out
    raise UsageError(f"unknown inside action {action!r}", hint=f"one of: {', '.join(ACTIONS)}")


def docker_plan(
    name: str,
    action: str,
    *,
    pid: int = 1,
    seconds: int = DEFAULT_SECONDS,
    engine: str = "docker",
    pyspy: str = "py-spy",
    results: str = RESULTS_INSIDE,
    output: str = ".",
) -> list[list[str]]:
    """Copy py-spy in (py-spy actions), run the action inside, copy its file out.

    >>> for argv in docker_plan("gateway", "cpu-record", pid=7, pyspy="/usr/local/bin/py-spy"):
    ...     print(" ".join(argv))
    docker cp /usr/local/bin/py-spy gateway:/tmp/py-spy
    docker exec gateway /tmp/py-spy record --pid 7 -d 30 -o /tmp/profile-7.svg
    docker cp gateway:/tmp/profile-7.svg .
    """
    argv, produced = _tool_argv(action, pid, seconds, results)
    plan = []
    if argv[0] == PYSPY_INSIDE:
        plan.append(docker.copy_in_command(pyspy, name, PYSPY_INSIDE, engine))
    plan.append(docker.exec_command(name, argv, engine))
    if produced:
        plan.append(docker.copy_out_command(name, produced, output, engine))
    return plan


def kubernetes_plan(
    pod: str,
    namespace: str | None,
    context: str | None,
    container: str | None,
    action: str,
    *,
    pid: int = 1,
    seconds: int = DEFAULT_SECONDS,
    pyspy: str = "py-spy",
    results: str = RESULTS_INSIDE,
    output: str = ".",
) -> list[list[str]]:
    """The same with ``kubectl cp`` / ``kubectl exec`` (``-c CONTAINER`` when given).

    >>> for argv in kubernetes_plan("gateway-7d9f", "prod", None, "app", "cpu-dump"):
    ...     print(" ".join(argv))
    kubectl -n prod cp py-spy gateway-7d9f:/tmp/py-spy -c app
    kubectl -n prod exec gateway-7d9f -c app -- /tmp/py-spy dump --pid 1
    """
    argv, produced = _tool_argv(action, pid, seconds, results)
    base = kubernetes.kubectl(namespace, context)
    pick = ["-c", container] if container else []
    plan = []
    if argv[0] == PYSPY_INSIDE:
        plan.append([*base, "cp", pyspy, f"{pod}:{PYSPY_INSIDE}", *pick])
    plan.append([*base, "exec", pod, *pick, "--", *argv])
    if produced:
        plan.append([*base, "cp", f"{pod}:{produced}", f"{output}/{produced.rsplit('/', 1)[-1]}",
                     *pick])  # fmt: skip
    return plan


def kubernetes_debug_command(
    pod: str, namespace: str | None, context: str | None, container: str, image: str
) -> list[str]:
    """An ephemeral debug container sharing the worker's PID namespace, with SYS_PTRACE
    (``--profile=general``): for images without py-spy, gdb or a shell.

    >>> " ".join(kubernetes_debug_command("gateway-7d9f", "prod", None, "app", "python:3.12"))
    'kubectl -n prod debug -it gateway-7d9f --image=python:3.12 --target=app --profile=general'
    """
    base = kubernetes.kubectl(namespace, context)
    return [*base, "debug", "-it", pod, f"--image={image}", f"--target={container}",
            "--profile=general"]  # fmt: skip
