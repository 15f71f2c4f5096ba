"""Options shared by several commands, declared once so they read the same everywhere."""

from __future__ import annotations

from typing import Any

import typer

DSN_OPTION = typer.Option(
    None,
    "--dsn",
    help="PostgreSQL DSN; else $PROFILER_DSN, else $DATABASE_URL. SQLAlchemy URLs accepted.",
    show_default=False,
)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON (sorted keys) on stdout.")
PID_OPTION = typer.Option(
    None,
    "--pid",
    help="A worker; a server master means all its workers. Repeatable.",
    show_default=False,
)
MATCH_OPTION = typer.Option(
    None, "--match", help="Every Python process whose command line matches this regex."
)


def duration_option(help: str, *, minimum: float = 0.1) -> Any:
    """``-d/--duration S`` for captures: None means "until Ctrl-C", which every help says.

    ``Any``, as ``typer.Option`` itself returns: it stands as a parameter's default.
    """
    return typer.Option(None, "-d", "--duration", min=minimum, help=help, show_default=False)


# Workers in containers: resolved to host PIDs (profiler.containers), then like --pid.
CONTAINER_OPTION = typer.Option(
    None,
    "--container",
    help="Workers inside this Docker/Podman container (name or id), profiled by host PID.",
    show_default=False,
)
ENGINE_OPTION = typer.Option(
    "docker", "--engine", help="With --container: docker or podman.", show_default=True
)
POD_OPTION = typer.Option(
    None,
    "--pod",
    help="Workers inside this Kubernetes pod (it must run on this node; else see the hint).",
    show_default=False,
)
SELECTOR_OPTION = typer.Option(
    None,
    "--selector",
    help="Every pod matching this label selector (e.g. app=gateway); data kept per pod.",
    show_default=False,
)
NAMESPACE_OPTION = typer.Option(
    None, "--namespace", help="With --pod/--selector: the Kubernetes namespace.", show_default=False
)
CONTEXT_OPTION = typer.Option(
    None, "--context", help="With --pod/--selector: the kubectl context.", show_default=False
)


def target_spec(
    pid: list[int] | None,
    match: str | None,
    container: str | None = None,
    engine: str = "docker",
    pod: str | None = None,
    selector: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
) -> Any:
    """The :class:`~profiler.targets.discovery.TargetSpec` of a command's target options.

    ``Any``: the import happens here, at run time, so ``--help`` stays instant.
    """
    from profiler.errors import UsageError
    from profiler.targets.discovery import TargetSpec

    if engine not in ("docker", "podman"):
        raise UsageError(f"unknown --engine {engine!r}", hint="use docker or podman")
    if pod and selector:
        raise UsageError("--pod and --selector both name pods", hint="pass one of them")
    if (namespace or context) and not (pod or selector):
        raise UsageError("--namespace and --context go with --pod or --selector")
    if pid and (container or pod or selector):
        raise UsageError(
            "--pid names host PIDs; --container/--pod/--selector find them",
            hint="pass one kind of target",
        )
    return TargetSpec(
        pids=tuple(pid or ()),
        match=match,
        container=container,
        engine=engine,
        pod=pod,
        selector=selector,
        namespace=namespace,
        context=context,
    )
