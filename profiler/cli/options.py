"""Options shared by several commands, declared once so they read the same everywhere."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from profiler.targets.discovery import TargetSpec

# typer.Option declarations are alike in shape (flag, default, help) by nature, here and in
# each command's signature; the logic is typer's. What is declared here is one flag with one
# meaning in several commands.
DSN_OPTION = typer.Option(
    None,
    "--dsn",
    help="PostgreSQL DSN; else $PROFILER_DSN, else $DATABASE_URL. SQLAlchemy URLs accepted.",
    show_default=False,
)
PGBOUNCER_OPTION = typer.Option(
    None,
    "--pgbouncer",
    help="PgBouncer's admin console DSN (postgresql://USER@HOST:PORT/pgbouncer), to see "
    "through the pooler to the workers; else $PROFILER_PGBOUNCER, else found on this host.",
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
# The threshold a session is read with (session show/compare, report); `watch` fires on its own.
IDLE_THRESHOLD_OPTION = typer.Option(
    1.0,
    "--idle-threshold",
    min=0.0,
    help="Seconds idle in transaction before a transaction counts as held too long.",
)
PG_INTERVAL_OPTION = typer.Option(
    1.0, "--pg-interval", min=0.1, help="Seconds between pg_stat_activity snapshots."
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


def _target_parameters(
    pid: list[int] | None = PID_OPTION,
    match: str | None = MATCH_OPTION,
    container: str | None = CONTAINER_OPTION,
    engine: str = ENGINE_OPTION,
    pod: str | None = POD_OPTION,
    selector: str | None = SELECTOR_OPTION,
    namespace: str | None = NAMESPACE_OPTION,
    context: str | None = CONTEXT_OPTION,
) -> None:
    """The target options, in their ``--help`` order: read for its signature, never called."""


TARGET_PARAMETERS = tuple(inspect.signature(_target_parameters, eval_str=True).parameters.values())


def target_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the target options in place of its ``target`` parameter.

    Put it under ``@app.command()``. typer reads the returned function's
    ``__signature__`` and ``__annotations__``, which list the eight options where
    ``target`` stood; once the options are parsed, ``command`` is called with
    ``target=``:func:`target_spec` of them, so a bad combination is a usage error
    before the command runs. ``functools.wraps`` keeps the name and the help text.
    """
    signature = inspect.signature(command)  # annotations stay strings: typer resolves them
    if "target" not in signature.parameters:
        raise TypeError(f"{command.__qualname__} has no `target` parameter to expand")
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        parameters.extend(TARGET_PARAMETERS if parameter.name == "target" else [parameter])

    @functools.wraps(command)
    def with_target_options(**options: Any) -> None:
        """typer passes every parameter by keyword."""
        target = target_spec(**{p.name: options.pop(p.name) for p in TARGET_PARAMETERS})
        command(target=target, **options)

    annotations = {name: hint for name, hint in command.__annotations__.items() if name != "target"}
    annotations.update({p.name: p.annotation for p in TARGET_PARAMETERS})
    with_target_options.__annotations__ = annotations  # a new dict: wraps shared the command's
    with_target_options.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters
    )
    return with_target_options


def target_spec(
    pid: list[int] | None,
    match: str | None,
    container: str | None = None,
    engine: str = "docker",
    pod: str | None = None,
    selector: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
) -> TargetSpec:
    """The :class:`~profiler.targets.discovery.TargetSpec` of a command's target options.

    The import happens here, at run time, so ``--help`` stays instant.
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
