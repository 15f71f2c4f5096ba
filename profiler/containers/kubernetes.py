"""``--pod NAME`` / ``--selector app=gateway`` (``--namespace NS``, ``--context CTX``): pods.

``kubectl get pod -o json`` names the node each pod runs on (``spec.nodeName``)
and each container's runtime id (``status.containerStatuses[].containerID``,
``containerd://<64 hex>``). On the pod's own node the runtime puts that id in
the cgroup path of every process of the container, so ``/proc/*/cgroup``
gives their host PIDs: profiled from the host like any container. A pod
elsewhere can only be profiled from inside (``kubectl exec``): :func:`resolve`
says so with the exact commands (:mod:`profiler.containers.inside`).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.containers import ContainerTarget, Runner, bare_id, pids_in_cgroup, run_tool
from profiler.errors import AttachError


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    name: str
    container_id: str  # with the runtime's scheme: containerd://..., cri-o://...
    running: bool
    image: str


@dataclass(frozen=True, slots=True)
class Pod:
    """What ``kubectl get pod -o json`` says about one pod, as far as profiling cares."""

    name: str
    namespace: str
    node: str
    phase: str
    containers: tuple[ContainerStatus, ...]
    capabilities: dict[str, tuple[str, ...]]  # container name -> capabilities.add
    seccomp: dict[str, str]  # container name -> seccompProfile.type (pod's when unset)

    def has_ptrace(self, container: str) -> bool:
        caps = self.capabilities.get(container, ())
        return any(c.upper().removeprefix("CAP_") in ("SYS_PTRACE", "ALL") for c in caps)


def kubectl(namespace: str | None, context: str | None) -> list[str]:
    """``kubectl [--context CTX] [-n NS]``: the start of every command we build.

    >>> kubectl("prod", "eu-1")
    ['kubectl', '--context', 'eu-1', '-n', 'prod']
    >>> kubectl(None, None)
    ['kubectl']
    """
    argv = ["kubectl"]
    if context:
        argv += ["--context", context]
    if namespace:
        argv += ["-n", namespace]
    return argv


def get_pod_command(
    name: str, namespace: str | None = None, context: str | None = None
) -> list[str]:
    """One pod, as JSON.

    >>> get_pod_command("gateway-7d9f", "prod")
    ['kubectl', '-n', 'prod', 'get', 'pod', 'gateway-7d9f', '-o', 'json']
    """
    return [*kubectl(namespace, context), "get", "pod", name, "-o", "json"]


def list_pods_command(
    selector: str, namespace: str | None = None, context: str | None = None
) -> list[str]:
    """Every pod the label selector matches, as a JSON list.

    >>> list_pods_command("app=gateway", "prod")
    ['kubectl', '-n', 'prod', 'get', 'pods', '-l', 'app=gateway', '-o', 'json']
    """
    return [*kubectl(namespace, context), "get", "pods", "-l", selector, "-o", "json"]


def parse_pod(item: dict[str, Any]) -> Pod:
    """One pod object (``kubectl get pod -o json``, or an item of ``get pods``)."""
    try:
        meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
        pod_seccomp = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get(
            "type", "RuntimeDefault"
        )
        caps: dict[str, tuple[str, ...]] = {}
        seccomp: dict[str, str] = {}
        for container in spec.get("containers") or []:
            context = container.get("securityContext") or {}
            caps[container["name"]] = tuple((context.get("capabilities") or {}).get("add") or ())
            seccomp[container["name"]] = (context.get("seccompProfile") or {}).get(
                "type", pod_seccomp
            )
        statuses = tuple(
            ContainerStatus(
                name=str(s["name"]),
                container_id=str(s.get("containerID") or ""),
                running="running" in (s.get("state") or {}),
                image=str(s.get("image", "")),
            )
            for s in status.get("containerStatuses") or []
        )
        return Pod(
            name=str(meta["name"]),
            namespace=str(meta.get("namespace", "default")),
            node=str(spec.get("nodeName", "")),
            phase=str(status.get("phase", "Unknown")),
            containers=statuses,
            capabilities=caps,
            seccomp=seccomp,
        )
    except (KeyError, TypeError) as exc:
        raise AttachError(
            f"could not read kubectl's pod JSON ({type(exc).__name__}: {exc})",
            hint="run the kubectl command by hand (profiler -v shows it)",
        ) from None


def parse_pods(text: str) -> list[Pod]:
    """A ``get pod`` object or a ``get pods`` list, as pods."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AttachError(
            f"kubectl did not print JSON: {exc}", hint="check kubectl works"
        ) from None
    items = data.get("items", []) if data.get("kind") == "List" else [data]
    return [parse_pod(item) for item in items]


def this_node() -> str:
    """This host's node name: ``$NODE_NAME`` (the downward API's usual name), else hostname."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


def resolve_pod(
    pod: Pod,
    container: str | None = None,
    *,
    proc: Path = Path("/proc"),
    context: str | None = None,
) -> list[ContainerTarget]:
    """The pod's running containers (or just ``container``) by host PID, when on this node.

    The cgroup scan decides: a pod whose containers have processes here is
    here, whatever the node is called. Otherwise :class:`AttachError` with the
    inside strategy's commands.
    """
    from profiler.containers import inside

    chosen = [c for c in pod.containers if container is None or c.name == container]
    if not chosen:
        names = ", ".join(c.name for c in pod.containers) or "none"
        raise AttachError(
            f"pod {pod.name} has no container {container!r} (it has: {names})",
            hint=f"its containers: {names}",
        )
    if pod.phase != "Running":
        raise AttachError(
            f"pod {pod.name} is {pod.phase}, not Running",
            hint=f"kubectl -n {pod.namespace} describe pod {pod.name}",
        )
    targets = []
    for status in chosen:
        if not status.running or not status.container_id:
            continue
        pids = pids_in_cgroup(status.container_id, proc=proc)
        if pids:
            targets.append(
                ContainerTarget(
                    "kubernetes",
                    pod.name,
                    bare_id(status.container_id),
                    tuple(pids),
                    namespace=pod.namespace,
                    container=status.name,
                )
            )
    if targets:
        return targets
    first = chosen[0].name
    plan = inside.kubernetes_plan(pod.name, pod.namespace, context, first, "cpu-dump")
    raise AttachError(
        f"pod {pod.name} runs on node {pod.node or '?'}, not on this host ({this_node()}): "
        "its workers cannot be reached by host PID",
        hint="profile from inside the pod: " + " && ".join(" ".join(c) for c in plan),
    )


def resolve(
    name: str | None = None,
    *,
    selector: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
    container: str | None = None,
    run: Runner = run_tool,
    proc: Path = Path("/proc"),
) -> tuple[list[ContainerTarget], list[str]]:
    """``--pod NAME`` or ``--selector``: the containers found here, and one line per pod
    skipped (on another node, not running) for the caller to warn about.

    With a selector, pods elsewhere are skipped; with none here at all, the
    first pod's error is raised.
    """
    if name is not None:
        pods = parse_pods(run(get_pod_command(name, namespace, context)))
    elif selector is not None:
        pods = parse_pods(run(list_pods_command(selector, namespace, context)))
        if not pods:
            raise AttachError(
                f"no pods match the selector {selector!r}",
                hint=" ".join([*kubectl(namespace, context), "get", "pods", "--show-labels"]),
            )
    else:
        return [], []
    targets: list[ContainerTarget] = []
    skipped: list[str] = []
    first_error: AttachError | None = None
    for pod in pods:
        try:
            targets.extend(resolve_pod(pod, container, proc=proc, context=context))
        except AttachError as exc:
            first_error = first_error or exc
            skipped.append(f"pod {pod.name}: {exc.message}")
    if not targets and first_error is not None:
        raise first_error
    return targets, skipped
