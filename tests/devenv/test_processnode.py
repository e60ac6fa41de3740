"""The process node (devenv/processnode.py), the dev cluster's stand-in for the kubelet.

The pure parts (environment resolution, ``$(VAR)`` expansion, status documents) are
tested directly; the rest against the real control plane (``cluster`` tests): the real Job,
ReplicaSet/Deployment and garbage-collector controllers must be able to drive Pods that
this node runs as local processes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devenv import processnode as pn
from devenv.waiting import wait_for

T = TypeVar("T")

# Generous bounds for machines that are shared and noisy: a wait fails only when the
# thing clearly is not going to happen.


# --- $(VAR) expansion --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x$(A)y$(B)z", "xalphaybetaz"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$alpha"),
        ("$$", "$"),
        ("a$b", "a$b"),
        ("trailing$", "trailing$"),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("", ""),
        ("no refs at all", "no refs at all"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert pn.expand(text, {"A": "alpha", "B": "beta"}) == expected


# --- environment resolution ----------------------------------------------------------------


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p1",
            "namespace": "ns1",
            "uid": "u-1",
            "labels": {"app": "demo"},
            "annotations": {"note": "hi"},
        },
        "spec": {"nodeName": "processnode", "serviceAccountName": "default", **spec},
    }


SECRETS = {("ns1", "creds"): {"user": "alice", "password": "s3cret"}}
CONFIGMAPS = {("ns1", "settings"): {"LEVEL": "debug", "MODE": "fast"}}


def _lookup(table: dict[tuple[str, str], dict[str, str]]) -> pn.Lookup:
    return lambda namespace, name: table.get((namespace, name))


def _env(container: dict[str, Any], pod: dict[str, Any] | None = None) -> dict[str, str]:
    return pn.resolve_env(pod or _pod(), container, _lookup(SECRETS), _lookup(CONFIGMAPS))


def test_env_values_refer_to_earlier_ones() -> None:
    env = _env(
        {
            "name": "c",
            "env": [
                {"name": "A", "value": "one"},
                {"name": "B", "value": "$(A)-two-$(LATER)"},
                {"name": "LATER", "value": "three"},
                {"name": "ESC", "value": "$$(A)"},
                {"name": "EMPTY", "value": ""},
            ],
        }
    )
    assert env == {
        "A": "one",
        "B": "one-two-$(LATER)",
        "LATER": "three",
        "ESC": "$(A)",
        "EMPTY": "",
    }


def test_env_from_secret_and_configmap_keys() -> None:
    env = _env(
        {
            "name": "c",
            "env": [
                {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                {
                    "name": "LEVEL",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}},
                },
                {
                    "name": "GONE",
                    "valueFrom": {
                        "configMapKeyRef": {"name": "nope", "key": "x", "optional": True}
                    },
                },
                {
                    "name": "NOKEY",
                    "valueFrom": {
                        "secretKeyRef": {"name": "creds", "key": "nope", "optional": True}
                    },
                },
            ],
        }
    )
    assert env == {"USER": "alice", "LEVEL": "debug"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"secretKeyRef": {"name": "absent", "key": "k"}}, 'secret "absent" not found'),
        ({"configMapKeyRef": {"name": "absent", "key": "k"}}, 'configmap "absent" not found'),
        (
            {"secretKeyRef": {"name": "creds", "key": "nope"}},
            "couldn't find key nope in Secret ns1/creds",
        ),
        (
            {"configMapKeyRef": {"name": "settings", "key": "nope"}},
            "couldn't find key nope in ConfigMap ns1/settings",
        ),
    ],
)
def test_env_missing_required_reference_is_a_config_error(
    source: dict[str, Any], message: str
) -> None:
    with pytest.raises(pn.ContainerConfigError, match=message):
        _env({"name": "c", "env": [{"name": "X", "valueFrom": source}]})


def test_env_from_sources_with_prefix_then_env_overrides() -> None:
    env = _env(
        {
            "name": "c",
            "envFrom": [
                {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                {"secretRef": {"name": "creds"}},
                {"secretRef": {"name": "absent", "optional": True}},
            ],
            "env": [{"name": "user", "value": "bob-$(CFG_MODE)"}],
        }
    )
    assert env == {
        "CFG_LEVEL": "debug",
        "CFG_MODE": "fast",
        "user": "bob-fast",
        "password": "s3cret",
    }


def test_env_from_missing_required_source_is_a_config_error() -> None:
    with pytest.raises(pn.ContainerConfigError, match='configmap "absent" not found'):
        _env({"name": "c", "envFrom": [{"configMapRef": {"name": "absent"}}]})


def test_env_field_refs() -> None:
    paths = {
        "NAME": "metadata.name",
        "NS": "metadata.namespace",
        "UID": "metadata.uid",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
        "POD_IP": "status.podIP",
        "HOST_IP": "status.hostIP",
        "APP": "metadata.labels['app']",
        "NOTE": "metadata.annotations['note']",
    }
    env = _env(
        {
            "name": "c",
            "env": [
                {"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in paths.items()
            ],
        }
    )
    assert env == {
        "NAME": "p1",
        "NS": "ns1",
        "UID": "u-1",
        "NODE": "processnode",
        "SA": "default",
        "POD_IP": "127.0.0.1",
        "HOST_IP": "127.0.0.1",
        "APP": "demo",
        "NOTE": "hi",
    }


def test_env_resource_field_ref_is_skipped() -> None:
    env = _env(
        {
            "name": "c",
            "env": [
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "KEPT", "value": "yes"},
            ],
        }
    )
    assert env == {"KEPT": "yes"}


def test_argv_expands_command_and_args_against_the_env() -> None:
    container = {
        "name": "c",
        "command": ["python3", "-c", "$(CODE)"],
        "args": ["$(NAME)", "$$(NAME)", "$(UNSET)"],
    }
    argv = pn.container_argv(container, {"CODE": "print(1)", "NAME": "p1"})
    assert argv == ["python3", "-c", "print(1)", "p1", "$(NAME)", "$(UNSET)"]


def test_argv_without_command_cannot_run() -> None:
    with pytest.raises(pn.NoCommandError, match="explicit command"):
        pn.container_argv({"name": "c", "image": "busybox", "args": ["x"]}, {})


def test_base_env_puts_prepended_dirs_first() -> None:
    env = pn.base_env(Path("/w/ns/p"), "p", ["/venv/bin"])
    assert env["PATH"].split(":")[0] == "/venv/bin"
    assert env["HOME"] == "/w/ns/p"
    assert env["LANG"] == "C.UTF-8"
    assert "KUBERNETES_SERVICE_HOST" not in env


# --- the service-account token -----------------------------------------------------------

# What the ServiceAccount admission plugin adds to a Pod whose token is automounted.
KUBE_API_ACCESS = {
    "name": "kube-api-access-x7k2p",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                    ]
                }
            },
        ],
    },
}
SA_MOUNT = {
    "name": "kube-api-access-x7k2p",
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    "readOnly": True,
}


def test_token_volume_is_the_admission_plugins_projected_volume() -> None:
    pod = _pod(volumes=[{"name": "tmp", "emptyDir": {}}, KUBE_API_ACCESS])
    container = {"name": "c", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, SA_MOUNT]}
    name, sources = pn.token_volume(pod, container)
    assert name == "kube-api-access-x7k2p"
    assert [next(iter(s)) for s in sources] == ["serviceAccountToken", "configMap", "downwardAPI"]


def test_no_token_volume_without_the_mount() -> None:
    # automountServiceAccountToken: false (Pod or ServiceAccount): no volume, no mount.
    pod = _pod(volumes=[{"name": "tmp", "emptyDir": {}}], automountServiceAccountToken=False)
    container = {"name": "c", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    assert pn.token_volume(pod, container) is None
    # A container that does not mount the Pod's token volume gets nothing either.
    assert pn.token_volume(_pod(volumes=[KUBE_API_ACCESS]), {"name": "c"}) is None


def test_legacy_token_secret_volume_is_projected() -> None:
    pod = _pod(volumes=[{"name": "old", "secret": {"secretName": "default-token-abc"}}])
    mount = {**SA_MOUNT, "name": "old"}
    assert pn.token_volume(pod, {"name": "c", "volumeMounts": [mount]}) == (
        "old",
        [{"secret": {"name": "default-token-abc", "items": None, "optional": None}}],
    )


def test_project_volume_writes_token_ca_and_namespace() -> None:
    asked: list[dict[str, Any]] = []

    def token(spec: dict[str, Any]) -> tuple[str, int]:
        asked.append(spec)
        return "the-token", spec["expirationSeconds"]

    configmaps = {("ns1", "kube-root-ca.crt"): {"ca.crt": "PEM"}}
    files, lifetime = pn.project_volume(
        _pod(), KUBE_API_ACCESS["projected"]["sources"], token, _lookup({}), _lookup(configmaps)
    )
    assert files == {"token": "the-token", "ca.crt": "PEM", "namespace": "ns1"}
    assert lifetime == 3607
    assert asked == [{"expirationSeconds": 3607, "path": "token"}]


def test_project_volume_waits_for_a_missing_configmap() -> None:
    sources = KUBE_API_ACCESS["projected"]["sources"]
    with pytest.raises(pn.ContainerConfigError, match=r'configmap "kube-root-ca\.crt" not found'):
        pn.project_volume(_pod(), sources, lambda s: ("t", 1), _lookup({}), _lookup({}))


def test_project_volume_rejects_paths_outside_the_volume() -> None:
    sources = [{"serviceAccountToken": {"path": "../escape"}}]
    with pytest.raises(pn.ContainerConfigError, match="invalid projected path"):
        pn.project_volume(_pod(), sources, lambda s: ("t", 1), _lookup({}), _lookup({}))


def test_write_volume_replaces_files(tmp_path: Path) -> None:
    pn.write_volume(tmp_path / "v", {"token": "one", "ca.crt": "PEM"})
    pn.write_volume(tmp_path / "v", {"token": "two"})
    assert (tmp_path / "v" / "token").read_text() == "two"
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["ca.crt", "token"]


def test_in_cluster_env_points_at_the_nodes_api_server() -> None:
    env = pn.in_cluster_env("https://127.0.0.1:16443")
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "16443"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:16443"


def _sandbox_tools() -> tuple[str, str, str]:
    tools = pn.ProcessNode.sandbox_tools(None)  # type: ignore[arg-type]
    if tools is None:
        pytest.fail("the process node's sandbox needs root and util-linux's unshare and mount")
    return tools


def _run_in_sandbox(tmp_path: Path, program: str, *, host_secrets_dir: bool | None) -> str:
    """Run `program` (sh) in the sandbox; host_secrets_dir None: on this host as it is,
    else inside an outer mount namespace whose /run is an empty tmpfs, with or without a
    /run/secrets directory (the two ways the sandbox makes its mount point)."""
    volume = tmp_path / "volume"
    pn.write_volume(volume, {"token": "t0k3n", "namespace": "ns1"})
    stage = tmp_path / "stage"
    stage.mkdir()
    tools = _sandbox_tools()
    argv = pn.sandbox_argv(*tools, volume, stage, ["/bin/sh", "-c", program])
    if host_secrets_dir is not None:
        setup = "mount -n -t tmpfs tmpfs /run"
        if host_secrets_dir:
            setup += " && mkdir /run/secrets"
        argv = [tools[0], "--mount", "--", "/bin/sh", "-c", setup + ' && exec "$@"', "x", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("host_secrets_dir", [None, True, False])
def test_sandbox_shows_the_token_to_its_process_only(
    tmp_path: Path, host_secrets_dir: bool | None
) -> None:
    before = sorted(os.listdir("/run"))
    secrets_before = sorted(os.listdir("/run/secrets")) if os.path.isdir("/run/secrets") else None
    out = _run_in_sandbox(
        tmp_path,
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token; "
        "echo; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; "
        "touch /var/run/secrets/kubernetes.io/serviceaccount/x 2>/dev/null || echo read-only",
        host_secrets_dir=host_secrets_dir,
    )
    assert out.split() == ["t0k3n", "ns1", "read-only"]
    # Nothing of it is left on (or ever shown to) the host.
    assert not Path(pn.SERVICE_ACCOUNT_DIR).exists()
    assert sorted(os.listdir("/run")) == before
    if secrets_before is not None:
        assert sorted(os.listdir("/run/secrets")) == secrets_before
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == []


def test_sandbox_reports_a_failed_mount(tmp_path: Path) -> None:
    tools = _sandbox_tools()
    argv = pn.sandbox_argv(*tools, tmp_path / "missing", tmp_path, ["true"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == pn.SANDBOX_EXIT_CODE
    assert "cannot mount the service-account token" in done.stderr


class _TokenNode:
    """Just enough of a ProcessNode for a PodWorker's volume handling."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.issued = 0

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.workdir / namespace / name

    def request_token(self, pod: dict[str, Any], source: dict[str, Any]) -> tuple[str, int]:
        self.issued += 1
        return f"token-{self.issued}", int(source.get("expirationSeconds", 3607))

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return None

    def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"ca.crt": "PEM"} if name == "kube-root-ca.crt" else None


def test_the_token_is_refreshed_when_due(tmp_path: Path) -> None:
    pod = _pod(volumes=[KUBE_API_ACCESS], containers=[{"name": "c", "volumeMounts": [SA_MOUNT]}])
    node = _TokenNode(tmp_path)
    worker = pn.PodWorker(node, pod, restarted=False)  # type: ignore[arg-type]
    name, sources = pn.token_volume(pod, pod["spec"]["containers"][0])
    worker._write_volume(pod, name, sources)
    token = worker._volume_dir(name) / "token"
    assert token.read_text() == "token-1"
    worker._refresh_volumes()  # not due yet (80 % of 3607 s)
    assert node.issued == 1
    worker._volumes[name] = 0.0  # due
    worker._refresh_volumes()
    assert token.read_text() == "token-2"
    assert (worker._volume_dir(name) / "namespace").read_text() == "ns1"


# --- status documents ----------------------------------------------------------------------


def test_exit_code_of_a_signal_is_128_plus_the_signal() -> None:
    assert pn.exit_code(0) == 0
    assert pn.exit_code(3) == 3
    assert pn.exit_code(-9) == 137
    assert pn.exit_code(-15) == 143


def test_tail_message_keeps_the_last_lines() -> None:
    data = "".join(f"line {i}\n" for i in range(100)).encode()
    message = pn.tail_message(data)
    assert message.splitlines() == [f"line {i}" for i in range(80, 100)]
    assert len(pn.tail_message(b"x" * 100_000).encode()) <= pn.TERMINATION_MESSAGE_BYTES


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_running_status_has_the_kubelets_fields() -> None:
    record = pn.ContainerRecord(
        "main",
        "python:3.11",
        state={"running": {"startedAt": "2024-01-01T00:00:00Z"}},
        ready=True,
        container_id="process://12",
    )
    old = {
        "phase": "Pending",
        "qosClass": "BestEffort",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"},
            {"type": "DisruptionTarget", "status": "True", "lastTransitionTime": "T0"},
        ],
    }
    status = pn.build_pod_status(
        old,
        phase="Running",
        init=[],
        main=[record],
        start_time="2024-01-01T00:00:00Z",
        now="T1",
    )
    assert status["phase"] == "Running"
    assert status["qosClass"] == "BestEffort"  # owned by the API server: kept
    assert status["podIP"] == status["hostIP"] == "127.0.0.1"
    assert status["podIPs"] == [{"ip": "127.0.0.1"}]
    assert status["startTime"] == "2024-01-01T00:00:00Z"
    conditions = _conditions(status)
    assert conditions["DisruptionTarget"]["status"] == "True"  # someone else's: kept
    assert conditions["PodScheduled"]["lastTransitionTime"] == "T0"
    for kind in ("Initialized", "ContainersReady", "Ready", "PodReadyToStartContainers"):
        assert conditions[kind]["status"] == "True", kind
    (cs,) = status["containerStatuses"]
    assert cs == {
        "name": "main",
        "image": "python:3.11",
        "imageID": "python:3.11",
        "ready": True,
        "restartCount": 0,
        "started": True,
        "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
        "lastState": {},
        "containerID": "process://12",
    }
    assert "initContainerStatuses" not in status


def test_transition_times_move_only_with_the_status() -> None:
    running = pn.ContainerRecord("main", state={"running": {"startedAt": "T"}}, ready=True)
    first = pn.build_pod_status(
        {}, phase="Running", init=[], main=[running], start_time="T", now="T1"
    )
    again = pn.build_pod_status(
        first, phase="Running", init=[], main=[running], start_time="T", now="T2"
    )
    assert _conditions(again)["Ready"]["lastTransitionTime"] == "T1"
    running.ready = False
    unready = pn.build_pod_status(
        again, phase="Running", init=[], main=[running], start_time="T", now="T3"
    )
    ready = _conditions(unready)["Ready"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "False",
        "ContainersNotReady",
        "T3",
    )
    assert "[main]" in ready["message"]


def test_failed_status_carries_exit_codes_for_pod_failure_policies() -> None:
    done = pn.ContainerRecord("init", state={"terminated": {"exitCode": 0, "reason": "Completed"}})
    failed = pn.ContainerRecord(
        "main",
        state={"terminated": {"exitCode": 65, "reason": "Error", "message": "boom"}},
    )
    status = pn.build_pod_status(
        {"reason": "Stale", "message": "old"},
        phase="Failed",
        init=[done],
        main=[failed],
        start_time="T",
        now="T1",
    )
    assert status["phase"] == "Failed"
    assert "reason" not in status and "message" not in status
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 65
    assert status["containerStatuses"][0]["started"] is False
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    conditions = _conditions(status)
    assert conditions["Ready"]["reason"] == "PodCompleted"
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["PodReadyToStartContainers"]["status"] == "False"


def test_pending_init_is_reported() -> None:
    init = pn.ContainerRecord("setup", state={"running": {"startedAt": "T"}})
    main = pn.ContainerRecord("main", state={"waiting": {"reason": "PodInitializing"}})
    status = pn.build_pod_status(
        {},
        phase="Pending",
        init=[init],
        main=[main],
        start_time="T",
        now="T1",
        reason="Why",
        message="because",
    )
    initialized = _conditions(status)["Initialized"]
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [setup]"
    assert (status["reason"], status["message"]) == ("Why", "because")


def test_looks_started() -> None:
    assert not pn.looks_started({"status": {"phase": "Pending"}})
    waiting = {"state": {"waiting": {"reason": "ContainerCreating"}}, "restartCount": 0}
    assert not pn.looks_started({"status": {"phase": "Pending", "containerStatuses": [waiting]}})
    assert pn.looks_started({"status": {"phase": "Running"}})
    running = {"state": {"running": {}}}
    assert pn.looks_started({"status": {"phase": "Pending", "initContainerStatuses": [running]}})


def test_node_selector_fits() -> None:
    labels = pn.node_labels("processnode")
    assert pn.node_selector_fits({"spec": {}}, labels)
    assert pn.node_selector_fits({"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}, labels)
    assert not pn.node_selector_fits({"spec": {"nodeSelector": {"gpu": "yes"}}}, labels)


def test_node_status_describes_this_machine() -> None:
    status = pn.node_status("processnode", "v1.35.0", "T1", "T0")
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["lastHeartbeatTime"], ready["lastTransitionTime"]) == (
        "True",
        "T1",
        "T0",
    )
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert int(status["capacity"]["cpu"]) >= 1
    assert status["capacity"]["memory"].endswith("Ki")
    assert status["allocatable"]["pods"] == "110"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.35.0"


# --- against the real control plane --------------------------------------------------------


@pytest.fixture
def namespace(cluster: Any, kube_client: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube_client)
    name = f"pn-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})

    def default_sa() -> bool:
        # Pods are only admitted once the serviceaccount controller made `default`.
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(f"the default ServiceAccount in {name}", default_sa)
    yield name
    core.delete_namespace(name)


def _job(
    name: str,
    code: str,
    *,
    backoff_limit: int = 0,
    restart: str = "Never",
    extra: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    pod: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            **(extra or {}),
            "template": {
                "spec": {
                    "restartPolicy": restart,
                    "terminationGracePeriodSeconds": 5,
                    **(pod or {}),
                    "containers": [
                        {
                            "name": "main",
                            "image": "python:3.11-slim",
                            "command": ["python3", "-c", code],
                            **(container or {}),
                        }
                    ],
                }
            },
        },
    }


def _job_finished(batch: client.BatchV1Api, ns: str, name: str) -> tuple[str, str] | None:
    """(condition type, reason) once the Job is Complete or Failed."""
    job = batch.read_namespaced_job(name, ns)
    for cond in (job.status and job.status.conditions) or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type, cond.reason or ""
    return None


def _job_pods(core: client.CoreV1Api, ns: str, job: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items


def _log_of(kube_client: client.ApiClient, pod: client.V1Pod, container: str = "main") -> str:
    """The container's log file, found through the node's work-dir annotation."""
    node = client.CoreV1Api(kube_client).read_node(pod.spec.node_name)
    workdir = Path(node.metadata.annotations[pn.WORKDIR_ANNOTATION])
    path = workdir / pod.metadata.namespace / pod.metadata.name / f"{container}.log"
    return path.read_text() if path.exists() else ""


def _terminated_exit_codes(pods: list[client.V1Pod]) -> list[int]:
    codes = []
    for pod in pods:
        for cs in pod.status.container_statuses or []:
            if cs.state and cs.state.terminated:
                codes.append(cs.state.terminated.exit_code)
    return codes


@pytest.mark.cluster
def test_node_is_registered_and_ready(cluster: Any, kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    nodes = core.list_node(label_selector="node.productimport.dev/processnode=true").items
    assert nodes, "no process node registered"
    node = nodes[0]
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True"
    assert {(a.type, a.address) for a in node.status.addresses} >= {("InternalIP", "127.0.0.1")}
    lease = client.CoordinationV1Api(kube_client).read_namespaced_lease(
        node.metadata.name, "kube-node-lease"
    )
    assert lease.spec.holder_identity == node.metadata.name


@pytest.mark.cluster
def test_job_completes(kube_client: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    batch.create_namespaced_job(namespace, _job("answer", "print(42)"))
    finished = wait_for("Job answer to finish", lambda: _job_finished(batch, namespace, "answer"))
    assert finished[0] == "Complete", finished
    (pod,) = _job_pods(core, namespace, "answer")
    assert pod.status.phase == "Succeeded"
    assert pod.status.pod_ip == "127.0.0.1"
    assert _terminated_exit_codes([pod]) == [0]
    assert _log_of(kube_client, pod).strip() == "42"


@pytest.mark.cluster
def test_job_fails_after_backoff_limit(kube_client: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    code = "import sys; print('about to fail'); sys.exit(3)"
    batch.create_namespaced_job(namespace, _job("exits3", code, backoff_limit=1))
    finished = wait_for("Job exits3 to finish", lambda: _job_finished(batch, namespace, "exits3"))
    assert finished == ("Failed", "BackoffLimitExceeded")
    pods = _job_pods(core, namespace, "exits3")
    assert len(pods) == 2
    assert all(p.status.phase == "Failed" for p in pods)
    assert _terminated_exit_codes(pods) == [3, 3]
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated.reason == "Error"
        assert "about to fail" in (terminated.message or "")


@pytest.mark.cluster
def test_pod_failure_policy_fails_job_on_exit_code(
    kube_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    policy = {
        "podFailurePolicy": {
            "rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [65]}}]
        }
    }
    job = _job("dataerr", "import sys; sys.exit(65)", backoff_limit=6, extra=policy)
    batch.create_namespaced_job(namespace, job)
    finished = wait_for("Job dataerr to finish", lambda: _job_finished(batch, namespace, "dataerr"))
    assert finished == ("Failed", "PodFailurePolicy")
    pods = _job_pods(core, namespace, "dataerr")
    assert len(pods) == 1
    assert _terminated_exit_codes(pods) == [65]


@pytest.mark.cluster
def test_env_from_secret_and_configmap_reaches_the_process(
    kube_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "creds"},
            "data": {"token": base64.b64encode(b"t0ps3cret").decode()},
        },
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"MODE": "fast", "LEVEL": "debug"}}
    )
    container = {
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "hello-$(MODE)"},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "args": ["$(GREETING)"],
    }
    code = (
        "import os, pathlib, sys; e = os.environ; "
        "pathlib.Path(e['HOME'], 'seen.txt').write_text("
        "'|'.join([e['TOKEN'], e['MODE'], e['CFG_LEVEL'], e['POD'], sys.argv[1], "
        "str('KUBERNETES_SERVICE_HOST' in e), os.getcwd() == e['HOME'] and 'cwd-ok' or '']))"
    )
    # Without a service-account token there are no in-cluster variables either (see the
    # token tests below for a Pod that has one).
    no_token = {"automountServiceAccountToken": False}
    batch.create_namespaced_job(namespace, _job("envs", code, container=container, pod=no_token))
    finished = wait_for("Job envs to finish", lambda: _job_finished(batch, namespace, "envs"))
    (pod,) = _job_pods(core, namespace, "envs")
    assert finished[0] == "Complete", (finished, pod.status.container_statuses)
    node = core.read_node(pod.spec.node_name)
    workdir = Path(node.metadata.annotations[pn.WORKDIR_ANNOTATION])
    seen = (workdir / namespace / pod.metadata.name / "seen.txt").read_text()
    assert seen == f"t0ps3cret|fast|debug|{pod.metadata.name}|hello-fast|False|cwd-ok"


@pytest.mark.cluster
def test_missing_secret_waits_until_it_exists(
    kube_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    container = {
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "t"}}}]
    }
    code = "import os; print(os.environ['T'])"
    batch.create_namespaced_job(namespace, _job("waits", code, container=container))

    def config_error() -> str | None:
        for pod in _job_pods(core, namespace, "waits"):
            for cs in pod.status.container_statuses or []:
                if cs.state.waiting and cs.state.waiting.reason == "CreateContainerConfigError":
                    return cs.state.waiting.message
        return None

    message = wait_for("CreateContainerConfigError", config_error)
    assert 'secret "later" not found' in message
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "later"}, "data": {"t": base64.b64encode(b"x").decode()}}
    )
    finished = wait_for("Job waits to finish", lambda: _job_finished(batch, namespace, "waits"))
    assert finished[0] == "Complete", finished


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.cluster
def test_deleting_the_owner_collects_the_job_and_stops_its_process(
    kube_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    marker = f"marker-{namespace}"
    job = _job(
        "owned",
        "import time, sys; time.sleep(600)",
        container={"args": [marker]},
    )
    job["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    ]
    batch.create_namespaced_job(namespace, job)

    def running() -> bool:
        pods = _job_pods(core, namespace, "owned")
        return bool(pods) and pods[0].status.phase == "Running" and bool(_processes_with(marker))

    wait_for("the owned Job's pod to run", running)
    core.delete_namespaced_config_map("owner", namespace)

    def job_gone() -> bool:
        try:
            batch.read_namespaced_job("owned", namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for("the garbage collector to delete the Job", job_gone)
    wait_for("the Job's pod to be deleted", lambda: not _job_pods(core, namespace, "owned"))
    wait_for("the pod's process to be stopped", lambda: not _processes_with(marker))


@pytest.mark.cluster
def test_deployment_pod_is_restarted_when_its_process_exits(
    kube_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    labels = {"app": "blinker"}
    code = "import time; print('started', flush=True); time.sleep(2)"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "blinker"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {"name": "main", "image": "python:3.11", "command": ["python3", "-c", code]}
                    ],
                },
            },
        },
    }
    apps.create_namespaced_deployment(namespace, deployment)

    def restarted() -> client.V1Pod | None:
        for pod in core.list_namespaced_pod(namespace, label_selector="app=blinker").items:
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].restart_count >= 1 and statuses[0].state.running:
                return pod
        return None

    pod = wait_for("the Deployment's container to be restarted", restarted)
    assert pod.status.phase == "Running"
    last = pod.status.container_statuses[0].last_state.terminated
    assert (last.exit_code, last.reason) == (0, "Completed")
    wait_for("the second run's output", lambda: _log_of(kube_client, pod).count("started") >= 2)


@pytest.mark.cluster
def test_container_without_command_fails_with_no_command(
    kube_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_client)
    pod = {
        "metadata": {"name": "imageonly"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "nginx"}]},
    }
    core.create_namespaced_pod(namespace, pod)

    def failed() -> client.V1Pod | None:
        got = core.read_namespaced_pod("imageonly", namespace)
        return got if got.status.phase == "Failed" else None

    got = wait_for("the image-only pod to fail", failed)
    terminated = got.status.container_statuses[0].state.terminated
    assert terminated.reason == "NoCommand"
    assert "explicit command" in terminated.message


@pytest.mark.cluster
def test_active_deadline_kills_the_pod(kube_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_client)
    pod = {
        "metadata": {"name": "slow"},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 3,
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": ["python3", "-c", "import time; time.sleep(600)"],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def failed() -> client.V1Pod | None:
        got = core.read_namespaced_pod("slow", namespace)
        return got if got.status.phase == "Failed" else None

    got = wait_for("the pod to exceed its deadline", failed)
    assert got.status.reason == "DeadlineExceeded"
    assert got.status.container_statuses[0].state.terminated.exit_code in (137, 143)


@pytest.mark.cluster
def test_on_failure_job_restarts_the_container(
    kube_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    # Fails on its first run only: the pod's directory (HOME) survives the restart.
    code = (
        "import os, pathlib, sys; mark = pathlib.Path(os.environ['HOME'], 'tried'); "
        "sys.exit(0) if mark.exists() else (mark.touch(), sys.exit(1))"
    )
    batch.create_namespaced_job(
        namespace, _job("retry", code, backoff_limit=3, restart="OnFailure")
    )
    finished = wait_for("Job retry to finish", lambda: _job_finished(batch, namespace, "retry"))
    assert finished[0] == "Complete", finished
    (pod,) = _job_pods(core, namespace, "retry")
    status = pod.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
    assert status.state.terminated.exit_code == 0


@pytest.mark.cluster
def test_readiness_probe_gates_ready(kube_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_client)
    pod = {
        "metadata": {"name": "gated"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": ["python3", "-c", "import time; time.sleep(600)"],
                    # Runs in the pod's directory, like the container.
                    "readinessProbe": {
                        "exec": {"command": ["test", "-f", "go"]},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def ready_condition() -> str | None:
        got = core.read_namespaced_pod("gated", namespace)
        if got.status.phase != "Running":
            return None
        return {c.type: c.status for c in got.status.conditions}.get("Ready")

    assert wait_for("the pod to run", ready_condition) == "False"
    got = core.read_namespaced_pod("gated", namespace)
    assert got.status.container_statuses[0].ready is False
    node = core.read_node(got.spec.node_name)
    workdir = Path(node.metadata.annotations[pn.WORKDIR_ANNOTATION])
    (workdir / namespace / "gated" / "go").touch()
    wait_for("the pod to become Ready", lambda: ready_condition() == "True")


# What a container sees of the in-cluster API, written to its HOME as JSON: the token
# files, the variables, and who the API server says the token belongs to (through the
# official client's in-cluster configuration, exactly as the operator and the API load it).
IN_CLUSTER_PROBE = """
import json, os, pathlib
sa = pathlib.Path('/var/run/secrets/kubernetes.io/serviceaccount')
seen = {
    'files': sorted(p.name for p in sa.iterdir()) if sa.is_dir() else [],
    'host': os.environ.get('KUBERNETES_SERVICE_HOST'),
    'port': os.environ.get('KUBERNETES_SERVICE_PORT'),
}
if seen['files']:
    from kubernetes import client, config
    config.load_incluster_config()
    review = client.AuthenticationV1Api().create_self_subject_review(
        {'apiVersion': 'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'})
    user = review.status.user_info
    seen.update(
        user=user.username,
        pod=(user.extra or {}).get('authentication.kubernetes.io/pod-name'),
        namespace=(sa / 'namespace').read_text(),
        ca=(sa / 'ca.crt').read_text().startswith('-----BEGIN CERTIFICATE-----'),
    )
pathlib.Path(os.environ['HOME'], 'seen.json').write_text(json.dumps(seen))
"""


def _seen(kube_client: client.ApiClient, pod: client.V1Pod) -> dict[str, Any]:
    node = client.CoreV1Api(kube_client).read_node(pod.spec.node_name)
    workdir = Path(node.metadata.annotations[pn.WORKDIR_ANNOTATION])
    return json.loads(
        (workdir / pod.metadata.namespace / pod.metadata.name / "seen.json").read_text()
    )


@pytest.mark.cluster
def test_service_account_token_gives_in_cluster_access(
    cluster: Any, kube_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    batch.create_namespaced_job(namespace, _job("incluster", IN_CLUSTER_PROBE))
    finished = wait_for(
        "Job incluster to finish", lambda: _job_finished(batch, namespace, "incluster")
    )
    (pod,) = _job_pods(core, namespace, "incluster")
    assert finished[0] == "Complete", (finished, _log_of(kube_client, pod))
    seen = _seen(kube_client, pod)
    server = pn.in_cluster_env(pn.Api(str(cluster.kubeconfig)).server)
    assert seen == {
        "files": ["ca.crt", "namespace", "token"],
        "host": server["KUBERNETES_SERVICE_HOST"],
        "port": server["KUBERNETES_SERVICE_PORT"],
        "user": f"system:serviceaccount:{namespace}:default",
        # A bound token (TokenRequest with the Pod as its object), as the kubelet's.
        "pod": [pod.metadata.name],
        "namespace": namespace,
        "ca": True,
    }
    # The host itself never sees the token.
    assert not Path(pn.SERVICE_ACCOUNT_DIR).exists()


@pytest.mark.cluster
def test_no_token_when_automount_is_disabled(kube_client: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube_client), client.CoreV1Api(kube_client)
    # Disabled on the Pod (as the operator's loader Jobs do) and on the ServiceAccount.
    core.create_namespaced_service_account(
        namespace, {"metadata": {"name": "quiet"}, "automountServiceAccountToken": False}
    )
    batch.create_namespaced_job(
        namespace,
        _job("podoff", IN_CLUSTER_PROBE, pod={"automountServiceAccountToken": False}),
    )
    batch.create_namespaced_job(
        namespace, _job("saoff", IN_CLUSTER_PROBE, pod={"serviceAccountName": "quiet"})
    )
    for name in ("podoff", "saoff"):
        finished = wait_for(
            f"Job {name} to finish", lambda n=name: _job_finished(batch, namespace, n)
        )
        (pod,) = _job_pods(core, namespace, name)
        assert finished[0] == "Complete", (finished, _log_of(kube_client, pod))
        assert _seen(kube_client, pod) == {"files": [], "host": None, "port": None}, name
        node = core.read_node(pod.spec.node_name)
        pod_dir = (
            Path(node.metadata.annotations[pn.WORKDIR_ANNOTATION]) / namespace / pod.metadata.name
        )
        assert not (pod_dir / ".volumes").exists(), "no token may be written for this pod"
