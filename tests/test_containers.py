"""Engine adapters (``--container``, ``--pod``, ``--selector``) and the inside strategy.

There is no Docker engine and no Kubernetes cluster here, so these adapters
cannot run for real. They are tested on the exact command lines they build
and on RECORDED outputs of ``docker inspect``, ``docker top``, ``podman top``
and ``kubectl get pod(s) -o json`` (``tests/data/containers/``, written from
the documented formats), with a fake ``/proc`` for the cgroup and process
tree lookups. The namespace mechanics they lead to are proven for real in
``tests/test_namespaces.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.capture.ptrace import CAP_ADD_HINT, SECCOMP_HINT, PtraceAccess, denied
from profiler.containers import (
    ContainerTarget,
    bare_id,
    descendants,
    docker,
    inside,
    kubernetes,
    pids_in_cgroup,
    run_tool,
)
from profiler.errors import AttachError, ExitCode, ToolMissingError, UsageError
from profiler.targets.discovery import TargetSpec, container_labels

DATA = Path(__file__).parent / "data" / "containers"
APP_ID = "8e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b3a2918070"
ENVOY_ID = "1f2e3d4c5b6a79880f1e2d3c4b5a69788f1e2d3c4b5a69788f1e2d3c4b5a6978"
CRIO_ID = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef01234567"


class Recorded:
    """A runner that answers each command from a recorded file, and remembers what ran."""

    def __init__(self, answers: dict[tuple[str, ...], str]) -> None:
        self.answers = answers
        self.ran: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str:
        self.ran.append(argv)
        answer = self.answers.get(tuple(argv))
        if answer is None:
            raise AttachError(f"{' '.join(argv[:3])} failed: no such object")
        return (DATA / answer).read_text()


def fake_proc(root: Path, processes: dict[int, tuple[int, str]]) -> Path:
    """A /proc with ``stat`` (for the parent) and ``cgroup`` for each pid."""
    proc = root / "proc"
    for pid, (ppid, cgroup) in processes.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(f"{pid} (python3) S {ppid} {pid} {pid} 0 -1\n")
        (proc / str(pid) / "cgroup").write_text(cgroup)
    (proc / "self").mkdir()
    return proc


def kube_cgroup(container_id: str) -> str:
    return (
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6a3d1e.slice/"
        f"cri-containerd-{container_id}.scope\n"
    )


# -- docker / podman ---------------------------------------------------------------------


def test_docker_container_resolves_to_the_host_pids_docker_top_lists() -> None:
    # GIVEN recorded `docker inspect` and `docker top -eo pid` of a running container
    run = Recorded(
        {
            ("docker", "inspect", "--type", "container", "gateway"): "docker-inspect-gateway.json",
            ("docker", "top", "gateway", "-eo", "pid"): "docker-top-gateway.txt",
        }
    )
    # WHEN
    target = docker.resolve("gateway", run=run)
    # THEN exactly those two commands ran, and the container's processes are its host PIDs
    assert run.ran == [
        ["docker", "inspect", "--type", "container", "gateway"],
        ["docker", "top", "gateway", "-eo", "pid"],
    ]
    assert target == ContainerTarget(
        "docker",
        "gateway",
        "4f0c2b9e1d3a7c5e8b6f2a1d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e",
        (31337, 31402, 31403, 31404),
    )
    assert target.label == "docker/gateway"


def test_podman_lists_host_pids_with_the_hpid_descriptor() -> None:
    run = Recorded(
        {
            ("podman", "inspect", "--type", "container", "gw"): "docker-inspect-gateway.json",
            ("podman", "top", "gw", "hpid"): "podman-top-gateway.txt",
        }
    )
    target = docker.resolve("gw", "podman", run=run)
    assert target.host_pids == (52001, 52044, 52045)
    assert target.label == "podman/gateway"


def test_without_docker_top_the_processes_below_state_pid_are_used(tmp_path: Path) -> None:
    # GIVEN top fails (a remote engine) and /proc has State.Pid 31337 with two children
    proc = fake_proc(
        tmp_path, {31337: (900, ""), 31402: (31337, ""), 31403: (31337, ""), 555: (1, "")}
    )
    run = Recorded(
        {("docker", "inspect", "--type", "container", "gateway"): "docker-inspect-gateway.json"}
    )
    # WHEN
    target = docker.resolve("gateway", run=run, proc=proc)
    # THEN the tree under State.Pid, not the unrelated process
    assert target.host_pids == (31337, 31402, 31403)


def test_a_stopped_container_is_a_cannot_attach_error_with_the_fix() -> None:
    run = Recorded(
        {("docker", "inspect", "--type", "container", "old"): "docker-inspect-stopped.json"}
    )
    with pytest.raises(AttachError) as info:
        docker.resolve("old", run=run)
    assert info.value.exit_code == ExitCode.CANNOT_ATTACH
    assert info.value.message == "docker container old is not running"
    assert info.value.hint is not None and "docker start old" in info.value.hint


def test_inspect_tells_the_settings_profiling_depends_on() -> None:
    running = docker.parse_inspect((DATA / "docker-inspect-gateway.json").read_text())
    stopped = docker.parse_inspect((DATA / "docker-inspect-stopped.json").read_text())
    assert (running.has_ptrace, running.seccomp_unconfined, running.read_only) == (True, True, True)
    assert (stopped.has_ptrace, stopped.seccomp_unconfined, stopped.read_only) == (
        False,
        False,
        False,
    )
    assert running.pid == 31337 and running.image == "registry.example.com/gateway:1.42.0"


def test_unknown_engine_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        docker.inspect_command("gateway", "lxc")


# -- kubernetes ----------------------------------------------------------------------------


def test_a_pod_on_this_node_resolves_through_the_cgroups(tmp_path: Path) -> None:
    # GIVEN the pod's containers' processes, found by their ids in /proc/*/cgroup
    proc = fake_proc(
        tmp_path,
        {
            4100: (4000, kube_cgroup(APP_ID)),
            4101: (4100, kube_cgroup(APP_ID)),
            4102: (4100, kube_cgroup(APP_ID)),
            4200: (4000, kube_cgroup(ENVOY_ID)),
            999: (1, "0::/system.slice/sshd.service\n"),
        },
    )
    cmd = ("kubectl", "--context", "eu-1", "-n", "prod", "get", "pod", "gateway-7d9f8c6b5-x2k4q")
    run = Recorded({(*cmd, "-o", "json"): "kubectl-get-pod.json"})
    # WHEN
    targets, skipped = kubernetes.resolve(
        "gateway-7d9f8c6b5-x2k4q", namespace="prod", context="eu-1", run=run, proc=proc
    )
    # THEN one kubectl call, both containers by host PID, each labelled with its pod
    assert run.ran == [[*cmd, "-o", "json"]]
    assert skipped == []
    assert [(t.container, t.host_pids) for t in targets] == [
        ("app", (4100, 4101, 4102)),
        ("envoy", (4200,)),
    ]
    assert {t.label for t in targets} == {"pod/gateway-7d9f8c6b5-x2k4q"}
    assert targets[0].namespace == "prod" and targets[0].container_id == APP_ID


def test_a_pod_elsewhere_says_so_with_the_inside_commands(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {999: (1, "0::/system.slice/sshd.service\n")})
    run = Recorded(
        {
            (
                "kubectl",
                "-n",
                "prod",
                "get",
                "pod",
                "gateway-7d9f8c6b5-x2k4q",
                "-o",
                "json",
            ): "kubectl-get-pod.json"
        }
    )
    with pytest.raises(AttachError) as info:
        kubernetes.resolve("gateway-7d9f8c6b5-x2k4q", namespace="prod", run=run, proc=proc)
    assert "runs on node node-a, not on this host" in info.value.message
    assert info.value.hint is not None
    assert (
        "kubectl -n prod cp py-spy gateway-7d9f8c6b5-x2k4q:/tmp/py-spy -c app && "
        "kubectl -n prod exec gateway-7d9f8c6b5-x2k4q -c app -- /tmp/py-spy dump --pid 1"
    ) in info.value.hint


def test_a_selector_keeps_every_pod_here_and_names_the_ones_skipped(tmp_path: Path) -> None:
    # GIVEN three pods: two on this node (containerd and CRI-O ids), one on node-c
    proc = fake_proc(
        tmp_path,
        {
            4100: (4000, kube_cgroup(APP_ID)),
            4101: (4100, kube_cgroup(APP_ID)),
            5100: (5000, f"0::/kubepods.slice/crio-{CRIO_ID}.scope\n"),
        },
    )
    run = Recorded(
        {
            (
                "kubectl",
                "-n",
                "prod",
                "get",
                "pods",
                "-l",
                "app=gateway",
                "-o",
                "json",
            ): "kubectl-get-pods-selector.json"
        }
    )
    # WHEN
    targets, skipped = kubernetes.resolve(
        selector="app=gateway", namespace="prod", run=run, proc=proc
    )
    # THEN data is kept per pod, and the pod elsewhere is a warning, not a failure
    assert {t.label: t.host_pids for t in targets} == {
        "pod/gateway-7d9f8c6b5-x2k4q": (4100, 4101),
        "pod/gateway-7d9f8c6b5-p9m2z": (5100,),
    }
    assert len(skipped) == 1 and skipped[0].startswith("pod gateway-7d9f8c6b5-zz81b: ")
    assert "node node-c" in skipped[0]


def test_pod_json_gives_capabilities_and_seccomp_per_container() -> None:
    (pod,) = kubernetes.parse_pods((DATA / "kubectl-get-pod.json").read_text())
    assert pod.node == "node-a" and pod.phase == "Running"
    assert pod.has_ptrace("app") and not pod.has_ptrace("envoy")
    assert pod.seccomp == {"app": "RuntimeDefault", "envoy": "RuntimeDefault"}
    assert [c.container_id for c in pod.containers] == [
        f"containerd://{APP_ID}",
        f"containerd://{ENVOY_ID}",
    ]


def test_cgroup_and_tree_lookups(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {10: (1, kube_cgroup(APP_ID)), 11: (10, ""), 12: (11, "")})
    assert pids_in_cgroup(f"containerd://{APP_ID}", proc=proc) == [10]
    assert descendants(10, proc=proc) == [10, 11, 12]
    assert bare_id(f"cri-o://{CRIO_ID}") == CRIO_ID


# -- the inside strategy ---------------------------------------------------------------


def test_docker_inside_plan_copies_py_spy_in_and_the_profile_out() -> None:
    plan = inside.docker_plan(
        "gateway", "cpu-record", pid=7, seconds=60, pyspy="/usr/local/bin/py-spy", output="out"
    )
    assert plan == [
        ["docker", "cp", "/usr/local/bin/py-spy", "gateway:/tmp/py-spy"],
        ["docker", "exec", "gateway", "/tmp/py-spy", "record", "--pid", "7", "-d", "60", "-o",
         "/tmp/profile-7.svg"],
        ["docker", "cp", "gateway:/tmp/profile-7.svg", "out"],
    ]  # fmt: skip


def test_kubernetes_inside_plan_for_memray_uses_the_image_memray_and_a_writable_dir() -> None:
    plan = inside.kubernetes_plan(
        "gateway-7d9f8c6b5-x2k4q",
        "prod",
        "eu-1",
        "app",
        "mem-attach",
        pid=7,
        results="/dev/shm",  # readOnlyRootFilesystem: /dev/shm is still a tmpfs
    )
    base = ["kubectl", "--context", "eu-1", "-n", "prod"]
    assert plan == [
        [*base, "exec", "gateway-7d9f8c6b5-x2k4q", "-c", "app", "--", "python", "-m", "memray",
         "attach", "--duration", "30", "-o", "/dev/shm/memray-7.bin", "7"],
        [*base, "cp", "gateway-7d9f8c6b5-x2k4q:/dev/shm/memray-7.bin", "./memray-7.bin", "-c",
         "app"],
    ]  # fmt: skip


def test_kubectl_debug_grants_ptrace_with_the_general_profile() -> None:
    argv = inside.kubernetes_debug_command("gw-1", None, "eu-1", "app", "python:3.12-slim")
    assert argv == [
        "kubectl",
        "--context",
        "eu-1",
        "debug",
        "-it",
        "gw-1",
        "--image=python:3.12-slim",
        "--target=app",
        "--profile=general",
    ]


def test_unknown_inside_action_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        inside.docker_plan("gateway", "db-watch")


# -- discovery and the CLI ---------------------------------------------------------------


def test_container_targets_label_their_python_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN docker resolves the container to this (Python) process and a non-Python one
    def resolve(name: str, engine: str = "docker") -> ContainerTarget:
        return ContainerTarget(engine, name, "4f0c2b9e1d3a", (os.getpid(), 1))

    monkeypatch.setattr(docker, "resolve", resolve)
    # WHEN
    labels = container_labels(TargetSpec(container="gateway"))
    # THEN only the Python one, labelled with its container
    assert labels == {os.getpid(): "docker/gateway"}


def test_missing_engine_cli_is_exit_5(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker on it
    with pytest.raises(ToolMissingError) as info:
        run_tool(["docker", "inspect", "gateway"])
    assert info.value.exit_code == ExitCode.TOOL_MISSING


def test_cli_container_without_docker_is_exit_5(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("workers", "--container", "gateway", "--json", env={"PATH": str(tmp_path)})
    assert result.exit_code == 5, result.output
    assert "docker is not on PATH" in result.stderr


def test_cli_pod_and_selector_together_is_a_usage_error(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("cpu", "dump", "--pod", "gw-1", "--selector", "app=gateway")
    assert result.exit_code == 2, result.output


# -- diagnosis -----------------------------------------------------------------------------


def test_ptrace_denied_in_a_container_without_the_capability_names_cap_add() -> None:
    access = PtraceAccess(yama_scope=1, has_cap_sys_ptrace=False, is_root=True, in_container=True)
    message, hint = denied(7, access, "Operation not permitted")
    assert "lacks CAP_SYS_PTRACE" in message
    assert hint == CAP_ADD_HINT
    assert "--cap-add SYS_PTRACE" in hint
    assert 'securityContext.capabilities.add: ["SYS_PTRACE"]' in hint
    assert "kubectl debug -it POD --image=IMAGE --target=CONTAINER --profile=general" in hint


def test_ptrace_denied_despite_the_capability_is_seccomp() -> None:
    access = PtraceAccess(1, True, True, seccomp=2, in_container=True)
    message, hint = denied(7, access, "Operation not permitted")
    assert "denied by seccomp" in message
    assert hint == SECCOMP_HINT and "--security-opt seccomp=unconfined" in hint
    assert "seccompProfile" in hint
