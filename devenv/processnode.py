"""The process node: a stand-in for the kubelet (and only the kubelet) of the dev cluster.

The dev environment runs the real control plane (etcd, kube-apiserver,
kube-controller-manager) on 127.0.0.1, but this machine has no container runtime, so no
real kubelet can run. This program takes the kubelet's place on the API so that the real
controllers (Job, ReplicaSet/Deployment, garbage collector, ...) drive real Pods:

    python -m devenv.processnode --kubeconfig PATH --workdir DIR \\
        [--node-name processnode] [--path-prepend DIR]...

What it does, the way the kubelet does it:

* registers one Node (Ready, InternalIP 127.0.0.1, capacity from this machine) and keeps
  its Lease in kube-node-lease fresh every 10 s (re-running it adopts an existing Node);
  the Node's annotation ``processnode.productimport.dev/workdir`` names the work dir;
* binds pending Pods of the default scheduler to its Node through pods/binding, since the
  dev cluster has no kube-scheduler (only ``nodeSelector`` is checked: affinity, taints
  and resource requests are not);
* runs each bound Pod's init containers in order, then its containers, each as a plain
  local process: argv = ``command`` + ``args`` with Kubernetes ``$(VAR)`` expansion; the
  environment is PATH (``--path-prepend`` first), HOME (the Pod's directory),
  LANG=C.UTF-8 and HOSTNAME (the Pod's name), plus the container's ``env``/``envFrom``
  (values, Secrets, ConfigMaps, the downward-API fieldRefs); cwd is ``workingDir`` when
  that directory exists here, else the Pod's directory;
* gives a container that mounts a service-account token (the projected
  ``kube-api-access-*`` volume the ServiceAccount admission plugin adds unless
  ``automountServiceAccountToken: false`` is set on the Pod or its ServiceAccount)
  in-cluster API access the way the kubelet does: a token from the TokenRequest API bound
  to the Pod (refreshed at 80 % of its lifetime), ``ca.crt`` from the kube-root-ca.crt
  ConfigMap and ``namespace``, written to ``<pod dir>/.volumes/<volume>/`` and bind-mounted
  read-only at /var/run/secrets/kubernetes.io/serviceaccount in a private mount namespace
  of that container's process only (``unshare --mount``; needs root), plus
  KUBERNETES_SERVICE_HOST/PORT taken from the node's kubeconfig. The host's /var/run
  gains nothing: the mount point lives in a tmpfs (or a tmpfs-backed overlay over /run
  where /var/run/secrets does not exist) of that namespace. A container without the
  mount gets neither the files nor the variables;
* writes each container's stdout+stderr to ``<workdir>/<namespace>/<pod>/<container>.log``
  (there is no kubelet API, so ``kubectl logs`` cannot work: read that file instead);
* reports Pod status through pods/status as the kubelet would (phase, conditions,
  container states with exit codes, restart counts), restarts containers per
  ``restartPolicy`` with the kubelet's back-off (10 s doubling to 5 min), honours
  ``activeDeadlineSeconds``, readiness probes (httpGet/tcpSocket on this machine, exec),
  and graceful deletion (SIGTERM the process group, SIGKILL after the grace period, then
  delete the Pod with grace 0);
* on SIGTERM/SIGINT kills every process group it started and exits; on start-up it kills
  process groups a killed predecessor left behind, and Pods it was running before are
  failed (reason ``NodeRestarted``, restartPolicy Never) or started again.

What it does NOT do (a real kubelet would): pull or use images (``image`` is only copied
to the status, so a container without ``command`` fails with reason ``NoCommand``); any
isolation (no cgroups, users or securityContext: processes run as this program's user,
share the host's loopback network and so its ports, and see its files); volumes and
volumeMounts other than the service-account token (ignored: an ``emptyDir`` at /tmp is
simply the host's /tmp); service links; resource limits; liveness and startup probes,
lifecycle hooks, sidecar (restartable init) and ephemeral containers; ``resourceFieldRef``
env; logs/exec/attach/port-forward; node eviction. It must never be mistaken for a
production node.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlparse

import urllib3.exceptions
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("processnode")

Json = dict[str, Any]
# (namespace, name) -> the object's data as text, or None when the object does not exist.
Lookup = Callable[[str, str], Mapping[str, str] | None]

LOOPBACK = "127.0.0.1"
DEFAULT_NODE_NAME = "processnode"
WORKDIR_ANNOTATION = "processnode.productimport.dev/workdir"
DEFAULT_SCHEDULERS = ("", "default-scheduler")
TERMINAL_PHASES = ("Succeeded", "Failed")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

HEARTBEAT_SECONDS = 10.0
# Like the kubelet: the Lease every 10 s, the Node's conditions far less often.
NODE_STATUS_EVERY = 6
LEASE_DURATION_SECONDS = 40
# The kubelet's container restart back-off: 10 s doubling up to 5 min, forgotten again
# once a container has run for 10 min.
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0
CONFIG_RETRY_SECONDS = 5.0
# How long a status write keeps retrying through an unreachable or failing API server
# before it is given up (the next change of the Pod writes the whole status again).
STATUS_RETRY_SECONDS = 120.0
POLL_SECONDS = 0.2
SHUTDOWN_GRACE_SECONDS = 5.0
DEFAULT_GRACE_SECONDS = 30
WATCH_TIMEOUT_SECONDS = 300
TERMINATION_MESSAGE_LINES = 20
TERMINATION_MESSAGE_BYTES = 4096
# Exit code a container runtime reports when it could not start the process at all.
START_ERROR_EXIT_CODE = 128
# The kubelet's report for a container whose process it lost (137 = killed by SIGKILL).
LOST_EXIT_CODE = 137
LOST_REASON = "ContainerStatusUnknown"
# What a request raises when the API server cannot be reached at all (restarting, say).
TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)
OWNED_POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    # Leases carry MicroTime, which the API insists has the microseconds.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- environment and command line (pure) ------------------------------------------------


class ContainerConfigError(Exception):
    """The container's environment cannot be built (the kubelet's
    CreateContainerConfigError): a missing Secret, ConfigMap or key that is not optional."""


class SandboxUnavailableError(Exception):
    """The container mounts a service-account token, but this node cannot make the
    private mount namespace that shows it (not root, or no unshare/mount)."""


class NoCommandError(Exception):
    """The container has no ``command``: without an image there is no entrypoint to run."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (k8s.io/kubernetes third_party expansion.Expand).

    ``$(NAME)`` becomes NAME's value when NAME is defined and stays as written otherwise;
    ``$$`` is an escaped ``$``; any other ``$`` is kept.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != "$" or i + 1 == n:
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(env.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def field_value(pod: Json, path: str, *, pod_ip: str = LOOPBACK, host_ip: str = LOOPBACK) -> str:
    """The downward API's ``fieldRef`` for the paths the kubelet supports."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match[1]) or {}).get(match[2], "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in items)
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _key_ref(
    ref: Json, kind: str, namespace: str, lookup: Lookup
) -> str | None:  # None: optional and absent
    data = lookup(namespace, ref.get("name", ""))
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
    key = ref.get("key", "")
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{ref['name']}")
    return data[key]


def resolve_env(
    pod: Json,
    container: Json,
    secrets: Lookup,
    configmaps: Lookup,
    *,
    pod_ip: str = LOOPBACK,
    host_ip: str = LOOPBACK,
) -> dict[str, str]:
    """The container's environment, in the kubelet's order: ``envFrom`` first, then ``env``
    in order (later entries win; a literal value may refer to earlier ones by ``$(VAR)``).

    Raises ContainerConfigError for what the kubelet reports as
    CreateContainerConfigError.
    """
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, kind, lookup = source["configMapRef"], "ConfigMap", configmaps
        elif "secretRef" in source:
            ref, kind, lookup = source["secretRef"], "Secret", secrets
        else:
            continue
        data = lookup(namespace, ref.get("name", ""))
        if data is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
        for key, value in data.items():
            name = prefix + key
            # A process environment cannot hold a name with '=' (the kubelet skips
            # such keys with an event, too).
            if not name or "=" in name or "\0" in name or "\0" in value:
                log.info("envFrom %s %s: skipping key %r", kind, ref.get("name"), key)
                continue
            env[name] = value
    for var in container.get("env") or []:
        name = var["name"]
        literal = var.get("value", "")
        source = var.get("valueFrom")
        if literal or not source:
            env[name] = expand(literal, env)
            continue
        value: str | None
        if "fieldRef" in source:
            value = field_value(
                pod, source["fieldRef"].get("fieldPath", ""), pod_ip=pod_ip, host_ip=host_ip
            )
        elif "secretKeyRef" in source:
            value = _key_ref(source["secretKeyRef"], "Secret", namespace, secrets)
        elif "configMapKeyRef" in source:
            value = _key_ref(source["configMapKeyRef"], "ConfigMap", namespace, configmaps)
        else:
            # resourceFieldRef (and anything newer) would need the container's resources
            # translated the kubelet's way; nothing here relies on it.
            log.info("env %s: %s is not supported by the process node; not set", name, source)
            continue
        if value is not None:
            env[name] = value
    return env


def container_argv(container: Json, env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args``, each expanded against the container's final environment."""
    command = container.get("command") or []
    if not command:
        raise NoCommandError(
            f"container {container.get('name')!r} has no command: the process node runs no "
            "images, so every container needs an explicit command (e.g. [python3, -m, ...])"
        )
    return [expand(arg, env) for arg in [*command, *(container.get("args") or [])]]


def base_env(pod_dir: Path, pod_name: str, path_prepend: Sequence[str]) -> dict[str, str]:
    """What a container gets before its own env: just enough for ordinary programs."""
    return {
        "PATH": os.pathsep.join([*path_prepend, BASE_PATH]),
        "HOME": str(pod_dir),
        "LANG": "C.UTF-8",
        "HOSTNAME": pod_name,
    }


# --- the service-account token (pure, but for the sandbox's mounts) -----------------------

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The kubelet's default for the projected token (the API server may extend it).
DEFAULT_TOKEN_SECONDS = 3607
# Like the kubelet: a token is replaced once 80 % of its lifetime has passed.
TOKEN_REFRESH_FRACTION = 0.8
TOKEN_RETRY_SECONDS = 10.0
# A container's exit code when its private mount namespace could not be set up.
SANDBOX_EXIT_CODE = 126

# Runs as `sh -c SANDBOX_SCRIPT sh SRC STAGE ARGV...` inside `unshare --mount`: mounts the
# volume directory SRC read-only at the service-account path, then execs ARGV (same PID,
# so the node's process table and signals are unaffected). Every mount is made in the new
# mount namespace only and with -n (no /run/mount/utab entry on the host).
SANDBOX_SCRIPT = r"""
set -u
src=$1 stage=$2
shift 2
fail() {
    echo "processnode: cannot mount the service-account token at $sa: $1" >&2
    exit %(code)d
}
target=/var/run/secrets
sa=$target/kubernetes.io/serviceaccount
if [ ! -d "$target" ]; then
    # No mount point on this host: lay an overlay over /run whose upper layer is a tmpfs
    # of this namespace, so creating the mount point leaves nothing on the host.
    run=$(%(readlink)s -f /var/run) || fail "cannot resolve /var/run"
    %(mount)s -n -t tmpfs -o mode=0700 processnode "$stage" || fail "tmpfs at $stage"
    mkdir "$stage/upper" "$stage/work" || fail "mkdir in $stage"
    %(mount)s -n -t overlay -o "lowerdir=$run,upperdir=$stage/upper,workdir=$stage/work" \
        processnode "$run" || fail "overlay over $run"
    mkdir -p "$target" || fail "mkdir $target"
fi
%(mount)s -n -t tmpfs -o mode=0755,size=1m processnode "$target" || fail "tmpfs at $target"
mkdir -p "$sa" || fail "mkdir $sa"
%(mount)s -n --bind "$src" "$sa" || fail "bind $src"
%(mount)s -n -o remount,bind,ro "$sa" || fail "read-only remount"
exec "$@"
"""


def token_volume(pod: Json, container: Json) -> tuple[str, list[Json]] | None:
    """The volume this container mounts at the service-account path, as (name, projected
    sources), or None.

    The ServiceAccount admission plugin adds that volume (``kube-api-access-*``) and the
    mount to every container unless ``automountServiceAccountToken`` is false on the Pod
    or its ServiceAccount, so the spec already says what the kubelet must provide. A
    legacy token Secret volume is taken as a projection of that Secret.
    """
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if (mount.get("mountPath") or "").rstrip("/") != SERVICE_ACCOUNT_DIR:
            continue
        volume = volumes.get(mount.get("name"))
        if volume is None:
            continue
        if "projected" in volume:
            return volume["name"], list((volume["projected"] or {}).get("sources") or [])
        if "secret" in volume:
            ref = volume["secret"] or {}
            source = {
                "name": ref.get("secretName", ""),
                "items": ref.get("items"),
                "optional": ref.get("optional"),
            }
            return volume["name"], [{"secret": source}]
    return None


def _volume_path(path: str) -> str:
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts:
        raise ContainerConfigError(f"invalid projected path {path!r}")
    return str(Path(*parts))


def _project_data(ref: Json, kind: str, namespace: str, lookup: Lookup) -> dict[str, str]:
    data = lookup(namespace, ref.get("name", ""))
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return {}
        raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
    items = ref.get("items")
    if not items:
        return {_volume_path(k): v for k, v in data.items()}
    files = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise ContainerConfigError(
                f"couldn't find key {key} in {kind} {namespace}/{ref.get('name', '')}"
            )
        files[_volume_path(item.get("path") or key)] = data[key]
    return files


# The token for a serviceAccountToken source: (token, seconds it was requested for).
TokenSource = Callable[[Json], tuple[str, int]]


def project_volume(
    pod: Json, sources: Sequence[Json], token: TokenSource, secrets: Lookup, configmaps: Lookup
) -> tuple[dict[str, str], int | None]:
    """The files of a projected volume (path -> content) and the shortest token lifetime
    in it (None without a token). Raises ContainerConfigError for what the kubelet
    reports as a failed mount (a missing ConfigMap, say), which is retried."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    files: dict[str, str] = {}
    lifetime: int | None = None
    for source in sources:
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"] or {}
            value, seconds = token(spec)
            files[_volume_path(spec.get("path") or "token")] = value
            lifetime = seconds if lifetime is None else min(lifetime, seconds)
        elif "configMap" in source:
            ref = source["configMap"] or {}
            files.update(_project_data(ref, "ConfigMap", namespace, configmaps))
        elif "secret" in source:
            files.update(_project_data(source["secret"] or {}, "Secret", namespace, secrets))
        elif "downwardAPI" in source:
            for item in (source["downwardAPI"] or {}).get("items") or []:
                if "fieldRef" not in item:
                    log.info("downwardAPI item %s is not supported; skipped", item)
                    continue
                path = _volume_path(item.get("path", ""))
                files[path] = field_value(pod, item["fieldRef"].get("fieldPath", ""))
        else:
            log.info("projected source %s is not supported by the process node", list(source))
    return files, lifetime


def write_volume(directory: Path, files: Mapping[str, str]) -> None:
    """Each file replaced atomically (a reader sees the old token or the new one)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for path, content in files.items():
        dest = directory / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(content)
        tmp.chmod(0o644)
        os.replace(tmp, dest)


def in_cluster_env(server: str) -> dict[str, str]:
    """What the kubelet gives every container for the ``kubernetes`` Service: here the
    API server the node itself talks to (the dev cluster has no Service network)."""
    url = urlparse(server)
    host = url.hostname or LOOPBACK
    port = str(url.port or 443)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
    }


def sandbox_argv(
    unshare: str, mount: str, readlink: str, volume_dir: Path, stage: Path, argv: Sequence[str]
) -> list[str]:
    """``argv`` run in a private mount namespace that shows ``volume_dir`` read-only at
    /var/run/secrets/kubernetes.io/serviceaccount (``stage``: an empty directory for
    the overlay's tmpfs, where /var/run/secrets does not exist)."""
    script = SANDBOX_SCRIPT % {
        "code": SANDBOX_EXIT_CODE,
        "mount": shlex.quote(mount),
        "readlink": shlex.quote(readlink),
    }
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        script,
        "processnode-sandbox",
        str(volume_dir),
        str(stage),
        *argv,
    ]


def tail_message(data: bytes) -> str:
    """The end of a failed container's log, as the kubelet's FallbackToLogsOnError gives."""
    lines = data.decode("utf-8", errors="replace").rstrip("\n").splitlines()
    text = "\n".join(lines[-TERMINATION_MESSAGE_LINES:])
    if len(text.encode()) > TERMINATION_MESSAGE_BYTES:
        text = text.encode()[-TERMINATION_MESSAGE_BYTES:].decode("utf-8", errors="ignore")
    return text


def exit_code(returncode: int) -> int:
    # Popen reports death by signal N as -N; runtimes (and shells) report 128 + N.
    return 128 - returncode if returncode < 0 else returncode


# --- status documents (pure) ------------------------------------------------------------


@dataclass
class ContainerRecord:
    """What the API shows of one container: a ContainerStatus in the making."""

    name: str
    image: str = ""
    restart_count: int = 0
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    ready: bool = False
    container_id: str = ""

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> Json | None:
        return self.state.get("terminated")

    @property
    def succeeded(self) -> bool:
        term = self.terminated
        return term is not None and term.get("exitCode") == 0

    def to_status(self) -> Json:
        doc: Json = {
            "name": self.name,
            "image": self.image,
            # There is no image, so no digest either: the spec's reference stands in.
            "imageID": self.image,
            "ready": self.ready and self.running,
            "restartCount": self.restart_count,
            "started": self.running,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            doc["containerID"] = self.container_id
        return doc

    @classmethod
    def from_status(cls, doc: Json) -> ContainerRecord:
        return cls(
            name=doc["name"],
            image=doc.get("image", ""),
            restart_count=int(doc.get("restartCount", 0)),
            state=doc.get("state") or {"waiting": {"reason": "ContainerCreating"}},
            last_state=doc.get("lastState") or {},
            container_id=doc.get("containerID", ""),
        )


def _condition(
    old: Mapping[str, Json],
    kind: str,
    ok: bool,
    now: str,
    reason: str | None = None,
    message: str | None = None,
) -> Json:
    status = "True" if ok else "False"
    prev = old.get(kind)
    # lastTransitionTime moves only when the status does, as the kubelet keeps it.
    if prev and prev.get("status") == status and prev.get("lastTransitionTime"):
        since = prev["lastTransitionTime"]
    else:
        since = now
    doc: Json = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if reason:
        doc["reason"] = reason
    if message:
        doc["message"] = message
    return doc


def build_pod_status(
    old: Json,
    *,
    phase: str,
    init: Sequence[ContainerRecord],
    main: Sequence[ContainerRecord],
    start_time: str,
    now: str,
    reason: str | None = None,
    message: str | None = None,
    ip: str = LOOPBACK,
) -> Json:
    """The Pod's next status, from its current one (fields and conditions owned by others,
    e.g. qosClass or a controller's DisruptionTarget, are kept) and the containers."""
    terminal = phase in TERMINAL_PHASES
    old_conditions = {c.get("type", ""): c for c in old.get("conditions") or []}
    pending_init = [r.name for r in init if not r.succeeded]
    unready = [r.name for r in main if not (r.ready and r.running)]
    conditions = [
        c for c in old.get("conditions") or [] if c.get("type") not in OWNED_POD_CONDITIONS
    ]
    conditions.append(_condition(old_conditions, "PodReadyToStartContainers", not terminal, now))
    if pending_init:
        conditions.append(
            _condition(
                old_conditions,
                "Initialized",
                False,
                now,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            )
        )
    else:
        conditions.append(_condition(old_conditions, "Initialized", True, now))
    for kind in ("Ready", "ContainersReady"):
        if terminal:
            conditions.append(_condition(old_conditions, kind, False, now, "PodCompleted"))
        elif unready:
            conditions.append(
                _condition(
                    old_conditions,
                    kind,
                    False,
                    now,
                    "ContainersNotReady",
                    f"containers with unready status: [{' '.join(unready)}]",
                )
            )
        else:
            conditions.append(_condition(old_conditions, kind, True, now))
    if "PodScheduled" not in old_conditions:
        conditions.append(_condition(old_conditions, "PodScheduled", True, now))
    status = {k: v for k, v in old.items() if k not in ("reason", "message")}
    status.update(
        {
            "phase": phase,
            "conditions": conditions,
            "hostIP": ip,
            "hostIPs": [{"ip": ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": start_time,
            "containerStatuses": [r.to_status() for r in main],
        }
    )
    if init:
        status["initContainerStatuses"] = [r.to_status() for r in init]
    else:
        status.pop("initContainerStatuses", None)
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return status


def looks_started(pod: Json) -> bool:
    """Whether a process of this Pod was ever started (by this node, before a restart)."""
    status = pod.get("status") or {}
    if status.get("phase") == "Running":
        return True
    for doc in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        state = doc.get("state") or {}
        if "running" in state or "terminated" in state or doc.get("lastState"):
            return True
        if doc.get("restartCount"):
            return True
    return False


def node_selector_fits(pod: Json, labels: Mapping[str, str]) -> bool:
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    return all(labels.get(k) == v for k, v in selector.items())


# --- the API --------------------------------------------------------------------------------


class PodGoneError(Exception):
    """The Pod this worker runs no longer exists (or is another Pod of the same name)."""


class NodeStoppingError(Exception):
    """The node is shutting down: Pods are left as they are reported (a restarted node
    deals with them), so nothing more is written."""


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class Api:
    """Raw JSON requests through the official client's ApiClient (its authentication,
    TLS and connection pool): the node reads and writes whole documents, and the typed
    models would only get in the way (pods/binding's response does not even deserialize)."""

    def __init__(self, kubeconfig: str) -> None:
        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        # One connection per Pod worker at most, plus the watch and the heartbeat.
        cfg.connection_pool_maxsize = 64
        self.client = k8s_client.ApiClient(cfg)
        self.server: str = cfg.host

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: Any,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        url_path = path + ("?" + urlencode(query) if query else "")
        method, url, headers, body, _ = self.client.param_serialize(
            method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        return self.client.call_api(method, url, headers, body, _request_timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Json:
        resp = self._send(method, path, query, body, content_type, timeout)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=resp, body=data.decode("utf-8", errors="replace"))
        return json.loads(data) if data else {}

    def get(self, path: str) -> Json | None:
        try:
            return self.request("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def watch(self, path: str, resource_version: str) -> Iterator[Json]:
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_TIMEOUT_SECONDS,
        }
        resp = self._send("GET", path, query, None, "", (10, WATCH_TIMEOUT_SECONDS + 30))
        try:
            if not 200 <= resp.status <= 299:
                data = resp.read()
                raise ApiException(http_resp=resp, body=data.decode("utf-8", errors="replace"))
            for line in iter_resp_lines(resp.response):
                if line:
                    yield json.loads(line)
        finally:
            resp.response.release_conn()


def _pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}" + (f"/{sub}" if sub else "")


# --- processes --------------------------------------------------------------------------


def _proc_start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: with the PID it names one process across PID reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessTable:
    """Every process group this node started, also on disk (``<workdir>/.processes``) so a
    successor can kill what a SIGKILLed node could not."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / ".processes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.closed = False

    def spawn(
        self, argv: list[str], *, env: dict[str, str], cwd: Path, out: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        with self.lock:
            # Once shutting down, nothing new may start: it would outlive the node.
            if self.closed:
                raise OSError("the process node is shutting down")
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                # Its own process group, so the whole tree it starts can be signalled.
                start_new_session=True,
                close_fds=True,
            )
            self.procs[proc.pid] = proc
            ticks = _proc_start_ticks(proc.pid)
            if ticks:
                (self.dir / str(proc.pid)).write_text(ticks)
            return proc

    def release(self, proc: subprocess.Popen[bytes]) -> None:
        """After the process exited: its group goes too (as a container's processes all
        end with it), and so does the record."""
        kill_group(proc.pid, signal.SIGKILL)
        with self.lock:
            self.procs.pop(proc.pid, None)
            (self.dir / str(proc.pid)).unlink(missing_ok=True)

    def kill_leftovers(self) -> None:
        """Kill the groups recorded by an earlier node process that did not clean up."""
        for entry in self.dir.iterdir():
            try:
                pgid, ticks = int(entry.name), entry.read_text().strip()
            except (OSError, ValueError):
                entry.unlink(missing_ok=True)
                continue
            leader = _proc_start_ticks(pgid)
            # The leader itself, unchanged, or members of a leaderless group: a PID is
            # not reused while its process group still has members, so either is ours.
            if leader == ticks or (leader is None and _group_members(pgid)):
                log.warning("killing process group %d left behind by an earlier node", pgid)
                kill_group(pgid, signal.SIGKILL)
            entry.unlink(missing_ok=True)

    def shutdown(self, grace: float) -> None:
        with self.lock:
            self.closed = True
            procs = list(self.procs.values())
        for proc in procs:
            kill_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in procs:
            kill_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self.release(proc)


def _resolvable(program: str, path: str, cwd: Path) -> bool:
    """Whether exec would find ``program`` (as Popen resolves it with the child's PATH)."""
    if "/" in program:
        target = Path(program) if Path(program).is_absolute() else cwd / program
        return os.access(target, os.X_OK) and target.is_file()
    return shutil.which(program, path=path) is not None


# --- one Pod ----------------------------------------------------------------------------


@dataclass
class ContainerRun:
    """One container of a running Pod: its spec, what the API sees, and its process."""

    spec: Json
    record: ContainerRecord
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    log_offset: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    ever_started: bool = False
    done: bool = False  # terminated and not to be restarted
    next_start: float = 0.0
    backoff: float = BACKOFF_INITIAL
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    probe_due: float = 0.0
    probe_successes: int = 0
    probe_failures: int = 0

    @property
    def name(self) -> str:
        return self.spec["name"]


class PodWorker(threading.Thread):
    """Runs one Pod bound to this node, from start to its terminal status or deletion."""

    def __init__(self, node: ProcessNode, pod: Json, *, restarted: bool) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod {meta['namespace']}/{meta['name']}", daemon=True)
        self.node = node
        self.ns: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self._pod = pod
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.aborted = threading.Event()
        self.restarted = restarted
        self.final_delete_sent = False
        spec = pod["spec"]
        self.policy: str = spec.get("restartPolicy") or "Always"
        self.dir = node.pod_dir(self.ns, self.pod_name)
        self.init = [
            ContainerRun(c, ContainerRecord(c["name"], c.get("image", "")), init=True)
            for c in spec.get("initContainers") or []
        ]
        self.main = [
            ContainerRun(c, ContainerRecord(c["name"], c.get("image", "")))
            for c in spec["containers"]
        ]
        self.init_index = 0
        self.phase = "Pending"
        self.start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        self._noted: set[str] = set()
        # Service-account volumes written for this Pod: name -> when to refresh (monotonic).
        self._volumes: dict[str, float] = {}

    # -- called from the watch thread --

    @property
    def pod(self) -> Json:
        with self._lock:
            return self._pod

    def update(self, pod: Json) -> None:
        with self._lock:
            self._pod = pod
        self.wake.set()

    def abort(self) -> None:
        """The Pod is gone from the API: stop at once, report nothing."""
        self.aborted.set()
        self.wake.set()

    # -- the worker thread --

    def run(self) -> None:
        try:
            self._run()
        except PodGoneError:
            log.info("%s: the Pod is gone; stopping its processes", self.name)
        except NodeStoppingError:
            pass
        except Exception:
            log.exception("%s: the pod worker failed", self.name)
        finally:
            # On the node's shutdown, its process table stops everything (SIGTERM first).
            if not self.node.stopping.is_set():
                self._kill_all()

    def _note_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._noted:
            self._noted.add(key)
            log.info("%s: " + message, self.name, *args)

    def _run(self) -> None:
        if (self.pod["metadata"]).get("deletionTimestamp"):
            self._deleted()
            return
        self._prepare_dir()
        if self.restarted and self._resume():
            return
        for run in [*self.init, *self.main]:
            for kind in ("livenessProbe", "startupProbe", "lifecycle"):
                if run.spec.get(kind):
                    self._note_once(
                        kind + run.name, "%s of %s is not supported; ignored", kind, run.name
                    )
            # Other volumeMounts are ignored too (documented above); most are an emptyDir
            # at /tmp or similar, so saying so each time would only be noise.
        if self.init:
            for run in self.main:
                run.record.state = {"waiting": {"reason": "PodInitializing"}}
        self._write_status()
        deadline = (self.pod["spec"]).get("activeDeadlineSeconds")
        # Measured from status.startTime, as the kubelet does, so a restart of the node
        # does not extend it.
        started = datetime.strptime(self.start_time, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        while True:
            if self.aborted.is_set() or self.node.stopping.is_set():
                return
            pod = self.pod
            if pod["metadata"].get("deletionTimestamp"):
                self._deleted()
                return
            if deadline is not None and time.time() - started > int(deadline):
                self._terminate(self._grace(pod, deleting=False))
                self._finish(
                    "Failed",
                    reason="DeadlineExceeded",
                    message="Pod was active on the node longer than the specified deadline",
                )
                return
            self._refresh_volumes()
            changed, terminal = self._step()
            if terminal:
                self._finish(terminal)
                return
            if changed:
                self._write_status()
            self.wake.wait(POLL_SECONDS)
            self.wake.clear()

    def _prepare_dir(self) -> None:
        # A new Pod of an old name gets a fresh directory (and fresh logs), as it would
        # get fresh containers; the node's own restart keeps the directory.
        marker = self.dir / ".uid"
        if self.dir.exists() and marker.exists() and marker.read_text().strip() != self.uid:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(self.uid)

    def _resume(self) -> bool:
        """This node restarted under a Pod it had started: its processes are gone. Fail the
        Pod (restartPolicy Never) or start it again from the reported state. Returns
        whether the Pod is finished."""
        status = self.pod.get("status") or {}
        old = {
            doc["name"]: ContainerRecord.from_status(doc)
            for doc in [
                *(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or []),
            ]
        }
        lost = {
            "exitCode": LOST_EXIT_CODE,
            "reason": LOST_REASON,
            "message": "the process node restarted while the container ran; its process is gone",
            "finishedAt": now_rfc3339(),
        }
        for run in [*self.init, *self.main]:
            prev = old.get(run.name)
            if prev is None:
                continue
            run.record = prev
            if prev.running:
                started = prev.state["running"].get("startedAt")
                term = {**lost, **({"startedAt": started} if started else {})}
                run.record.state = {"terminated": term}
            run.ever_started = bool(prev.terminated or prev.restart_count or prev.last_state)
        if self.policy == "Never":
            log.warning(
                "%s: was running when the node stopped; failing it (NodeRestarted)", self.name
            )
            self._finish(
                "Failed",
                reason="NodeRestarted",
                message="the process node restarted and lost this Pod's processes",
            )
            return True
        log.warning("%s: was running when the node stopped; starting it again", self.name)
        rerun = self.main
        if all(r.record.succeeded for r in self.init):
            # Initialised before: only the containers run again.
            self.init_index = len(self.init)
            self.phase = "Running"
        else:
            rerun = [*self.init, *self.main]
        for run in rerun:
            if run.record.succeeded and (run.init or self.policy == "OnFailure"):
                run.done = True
            elif run.record.terminated:
                run.record.last_state = {"terminated": run.record.terminated}
                run.record.state = {"waiting": {"reason": "ContainerCreating"}}
        return False

    def _step(self) -> tuple[bool, str | None]:
        """Advance the containers once; returns (status changed, terminal phase or None)."""
        changed = False
        if self.init_index < len(self.init):
            run = self.init[self.init_index]
            # Init containers run one at a time, in order (retried on failure unless the
            # Pod never restarts: see _terminated).
            changed |= self._advance(run)
            if run.done:
                if not run.record.succeeded:
                    return True, "Failed"
                self.init_index += 1
            if self.init_index < len(self.init):
                return changed, None
        for run in self.main:
            changed |= self._advance(run)
        if any(run.ever_started for run in self.main) and self.phase != "Running":
            self.phase = "Running"
            changed = True
        if self.policy != "Always" and all(run.done for run in self.main):
            ok = all(run.record.succeeded for run in self.main)
            return True, "Succeeded" if ok else "Failed"
        return changed, None

    def _advance(self, run: ContainerRun) -> bool:
        if run.done:
            return False
        now = time.monotonic()
        if run.proc is None:
            if now < run.next_start:
                return False
            self._start(run)
            return True
        code = run.proc.poll()
        if code is None:
            return self._probe(run)
        self._exited(run, exit_code(code))
        return True

    def _exited(self, run: ContainerRun, code: int, *, may_restart: bool = True) -> None:
        proc = run.proc
        assert proc is not None
        self.node.processes.release(proc)
        run.proc = None
        message = ""
        if run.log_file is not None:
            run.log_file.close()
            run.log_file = None
        if code != 0:
            with contextlib.suppress(OSError), self._log_path(run).open("rb") as fh:
                fh.seek(run.log_offset)
                message = tail_message(fh.read())
        terminated: Json = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": run.started_at,
            "finishedAt": now_rfc3339(),
            "containerID": run.record.container_id,
        }
        if proc.returncode is not None and proc.returncode < 0:
            terminated["signal"] = -proc.returncode
        if message:
            terminated["message"] = message
        self._terminated(run, terminated, may_restart=may_restart)

    def _terminated(self, run: ContainerRun, terminated: Json, *, may_restart: bool = True) -> None:
        code = terminated["exitCode"]
        log.info("%s: container %s exited with %d", self.name, run.name, code)
        run.record.ready = False
        policy = "OnFailure" if run.init and self.policy != "Never" else self.policy
        restart = may_restart and (policy == "Always" or (policy == "OnFailure" and code != 0))
        if not restart:
            run.record.state = {"terminated": terminated}
            run.done = True
            return
        ran = time.monotonic() - run.started_mono if run.started_mono else 0.0
        if ran >= BACKOFF_RESET_AFTER:
            run.backoff = BACKOFF_INITIAL
        delay = run.backoff
        run.backoff = min(run.backoff * 2, BACKOFF_MAX)
        run.next_start = time.monotonic() + delay
        run.record.last_state = {"terminated": terminated}
        run.record.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container={run.name} "
                f"pod={self.pod_name}_{self.ns}({self.uid})",
            }
        }

    def _log_path(self, run: ContainerRun) -> Path:
        return self.dir / f"{run.name}.log"

    # -- the service-account token --

    def _volume_dir(self, name: str) -> Path:
        return self.dir / ".volumes" / name

    def _write_volume(self, pod: Json, name: str, sources: Sequence[Json]) -> None:
        files, lifetime = project_volume(
            pod,
            sources,
            lambda spec: self.node.request_token(pod, spec),
            self.node.secret_data,
            self.node.configmap_data,
        )
        write_volume(self._volume_dir(name), files)
        due = float("inf") if lifetime is None else lifetime * TOKEN_REFRESH_FRACTION
        self._volumes[name] = time.monotonic() + due

    def _refresh_volumes(self) -> None:
        now = time.monotonic()
        due = [name for name, at in self._volumes.items() if now >= at]
        if not due:
            return
        pod = self.pod
        wanted = {
            vol[0]: vol[1]
            for spec in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
            if (vol := token_volume(pod, spec))
        }
        for name in due:
            try:
                self._write_volume(pod, name, wanted.get(name, []))
                log.info("%s: refreshed the service-account token in volume %s", self.name, name)
            except (ContainerConfigError, ApiException, *TRANSPORT_ERRORS) as exc:
                log.warning("%s: refreshing volume %s failed (retrying): %s", self.name, name, exc)
                self._volumes[name] = now + TOKEN_RETRY_SECONDS

    def _sandboxed(self, pod: Json, run: ContainerRun, argv: list[str]) -> list[str] | None:
        """``argv`` wrapped to see the service-account token, or None when this container
        does not mount one. Raises ContainerConfigError while the volume cannot be made."""
        volume = token_volume(pod, run.spec)
        if volume is None:
            return None
        name, sources = volume
        if name not in self._volumes:
            self._write_volume(pod, name, sources)
        tools = self.node.sandbox_tools()
        if tools is None:
            raise SandboxUnavailableError(
                "the process node needs root and unshare(1)/mount(1) (util-linux) to give a "
                "container its service-account token; set automountServiceAccountToken: "
                "false on the Pod if it needs none"
            )
        stage = self.dir / ".volumes" / f".{run.name}-stage"
        stage.mkdir(parents=True, exist_ok=True)
        return sandbox_argv(*tools, self._volume_dir(name), stage, argv)

    def _start(self, run: ContainerRun) -> None:
        pod = self.pod
        try:
            env = resolve_env(pod, run.spec, self.node.secret_data, self.node.configmap_data)
            argv = container_argv(run.spec, env)
            wrapped = self._sandboxed(pod, run, argv)
            if wrapped is not None:
                # The kubelet's variables come first: the container's own env may override.
                env = {**in_cluster_env(self.node.server), **env}
        except SandboxUnavailableError as exc:
            self._start_failed(run, "StartError", str(exc))
            return
        except ContainerConfigError as exc:
            log.info("%s: container %s: %s", self.name, run.name, exc)
            run.record.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            run.next_start = time.monotonic() + CONFIG_RETRY_SECONDS
            return
        except NoCommandError as exc:
            self._start_failed(run, "NoCommand", str(exc))
            return
        except (ApiException, *TRANSPORT_ERRORS) as exc:
            # Reading a Secret or ConfigMap failed for a reason other than its absence:
            # try again shortly, as the kubelet would.
            log.warning("%s: container %s: reading its env failed: %s", self.name, run.name, exc)
            run.next_start = time.monotonic() + CONFIG_RETRY_SECONDS
            return
        full_env = {**base_env(self.dir, self.pod_name, self.node.path_prepend), **env}
        working = run.spec.get("workingDir")
        cwd = Path(working) if working and Path(working).is_dir() else self.dir
        if working and cwd != Path(working):
            self._note_once(
                "cwd" + run.name, "workingDir %s does not exist here; using %s", working, cwd
            )
        if wrapped is not None and not _resolvable(argv[0], full_env["PATH"], cwd):
            # The wrapper itself always starts: report a missing program as a runtime
            # would, not as the wrapper's exit code.
            self._start_failed(
                run, "StartError", f"failed to start {argv[0]!r}: no such file or directory"
            )
            return
        log_file = self._log_path(run).open("ab")
        run.log_offset = log_file.tell()
        try:
            proc = self.node.processes.spawn(wrapped or argv, env=full_env, cwd=cwd, out=log_file)
        except OSError as exc:
            log_file.close()
            self._start_failed(run, "StartError", f"failed to start {argv[0]!r}: {exc}")
            return
        if run.ever_started:
            run.record.restart_count += 1
        run.ever_started = True
        run.proc, run.log_file, run.env, run.cwd = proc, log_file, env, cwd
        run.started_at = now_rfc3339()
        run.started_mono = time.monotonic()
        run.record.container_id = f"process://{proc.pid}"
        run.record.state = {"running": {"startedAt": run.started_at}}
        probe = run.spec.get("readinessProbe")
        run.record.ready = probe is None
        run.probe_successes = run.probe_failures = 0
        if probe:
            run.probe_due = run.started_mono + int(probe.get("initialDelaySeconds", 0))
        log.info("%s: started container %s (pid %d): %s", self.name, run.name, proc.pid, argv)

    def _start_failed(self, run: ContainerRun, reason: str, message: str) -> None:
        """The process could not be started at all: a terminated container, as a runtime
        reports it, so Jobs see a failure instead of waiting for ever."""
        log.info("%s: container %s: %s: %s", self.name, run.name, reason, message)
        now = now_rfc3339()
        if run.ever_started:
            run.record.restart_count += 1
        run.ever_started = True
        run.started_mono = time.monotonic()
        self._terminated(
            run,
            {
                "exitCode": START_ERROR_EXIT_CODE,
                "reason": reason,
                "message": message,
                "startedAt": now,
                "finishedAt": now,
            },
        )

    # -- readiness --

    def _probe(self, run: ContainerRun) -> bool:
        probe = run.spec.get("readinessProbe")
        now = time.monotonic()
        if not probe or now < run.probe_due:
            return False
        run.probe_due = now + int(probe.get("periodSeconds", 10))
        ok = self._probe_once(run, probe)
        if ok:
            run.probe_successes += 1
            run.probe_failures = 0
        else:
            run.probe_failures += 1
            run.probe_successes = 0
        before = run.record.ready
        if ok and run.probe_successes >= int(probe.get("successThreshold", 1)):
            run.record.ready = True
        elif not ok and run.probe_failures >= int(probe.get("failureThreshold", 3)):
            run.record.ready = False
        return before != run.record.ready

    def _probe_once(self, run: ContainerRun, probe: Json) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            spec = probe["httpGet"]
            host = spec.get("host") or LOOPBACK
            if host not in (LOOPBACK, "localhost"):
                self._note_once(
                    "probehost" + run.name, "probe host %s is not this machine; ready", host
                )
                return True
            port = self._port(run, spec.get("port"))
            scheme = (spec.get("scheme") or "HTTP").lower()
            url = f"{scheme}://{host}:{port}{spec.get('path') or '/'}"
            headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
            ctx = (
                ssl._create_unverified_context() if scheme == "https" else None
            )  # as kubelet: no verify
            try:
                req = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                    return 200 <= resp.status < 400
            except urllib.error.HTTPError as exc:
                return 200 <= exc.code < 400
            except (OSError, ValueError):
                return False
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            try:
                port = self._port(run, spec.get("port"))
                with socket.create_connection(
                    (spec.get("host") or LOOPBACK, port), timeout=timeout
                ):
                    return True
            except (OSError, ValueError):
                return False
        if "exec" in probe:
            command = [expand(a, run.env) for a in probe["exec"].get("command") or []]
            env = {**base_env(self.dir, self.pod_name, self.node.path_prepend), **run.env}
            try:
                done = subprocess.run(
                    command,
                    env=env,
                    cwd=run.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired, ValueError):
                return False
            return done.returncode == 0
        self._note_once(
            "probe" + run.name, "readiness probe of %s is not supported; ready", run.name
        )
        return True

    @staticmethod
    def _port(run: ContainerRun, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for spec in run.spec.get("ports") or []:
            if spec.get("name") == port:
                return int(spec["containerPort"])
        raise ValueError(f"no port named {port!r}")

    # -- ending --

    def _grace(self, pod: Json, *, deleting: bool) -> float:
        meta, spec = pod["metadata"], pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds") if deleting else None
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        return float(grace)

    def _running(self) -> list[ContainerRun]:
        return [run for run in [*self.init, *self.main] if run.proc is not None]

    def _terminate(self, grace: float) -> None:
        """SIGTERM every container's process group, SIGKILL what is left after `grace`."""
        running = self._running()
        for run in running:
            assert run.proc is not None
            kill_group(run.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (
            any(run.proc.poll() is None for run in running if run.proc)
            and time.monotonic() < deadline
        ):
            if self.aborted.wait(POLL_SECONDS):
                break
        for run in running:
            assert run.proc is not None
            kill_group(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
            self._exited(run, exit_code(run.proc.returncode), may_restart=False)
        # Containers waiting for a restart will not get one any more.
        for run in [*self.init, *self.main]:
            run.done = True

    def _kill_all(self) -> None:
        """SIGKILL at once: the Pod is gone from the API, or this worker failed."""
        for run in self._running():
            assert run.proc is not None
            kill_group(run.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=5)
            self.node.processes.release(run.proc)
            run.proc = None
            if run.log_file is not None:
                run.log_file.close()
                run.log_file = None

    def _deleted(self) -> None:
        """What the kubelet does with a deleted Pod: stop its containers within the grace
        period, report the terminal phase, then remove the object (grace 0)."""
        pod = self.pod
        grace = self._grace(pod, deleting=True)
        log.info("%s: deleted; stopping its containers (grace %.0fs)", self.name, grace)
        self._terminate(grace)
        if self.aborted.is_set():
            return
        ok = all(run.record.succeeded for run in self.main)
        with contextlib.suppress(PodGoneError):
            self._finish("Succeeded" if ok else "Failed")
        self.node.delete_pod(self.ns, self.pod_name, self.uid)
        self.final_delete_sent = True

    def _finish(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        self._terminate(0)
        self.phase = phase
        log.info("%s: %s%s", self.name, phase, f" ({reason})" if reason else "")
        self._write_status(reason=reason, message=message)

    def _write_status(self, reason: str | None = None, message: str | None = None) -> None:
        init = [run.record for run in self.init]
        main = [run.record for run in self.main]

        def mutate(old: Json) -> Json:
            return build_pod_status(
                old,
                phase=self.phase,
                init=init,
                main=main,
                start_time=self.start_time,
                now=now_rfc3339(),
                reason=reason,
                message=message,
            )

        self.node.update_pod_status(self.ns, self.pod_name, self.uid, mutate)


# --- the node ---------------------------------------------------------------------------


def _meminfo_kib() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def _os_image() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def _read_id(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return ""


ARCHITECTURES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def node_labels(name: str) -> dict[str, str]:
    arch = ARCHITECTURES.get(platform.machine(), platform.machine())
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        "node.productimport.dev/processnode": "true",
    }


def node_status(name: str, kubelet_version: str, now: str, since: str) -> Json:
    resources = {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{_meminfo_kib()}Ki",
        "pods": "110",
    }
    condition = {"lastHeartbeatTime": now, "lastTransitionTime": since}
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            {
                **condition,
                "type": "MemoryPressure",
                "status": "False",
                "reason": "KubeletHasSufficientMemory",
            },
            {
                **condition,
                "type": "DiskPressure",
                "status": "False",
                "reason": "KubeletHasNoDiskPressure",
            },
            {
                **condition,
                "type": "PIDPressure",
                "status": "False",
                "reason": "KubeletHasSufficientPID",
            },
            {
                **condition,
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "the process node (a stand-in for the kubelet) is posting ready status",
            },
        ],
        "addresses": [
            {"type": "InternalIP", "address": LOOPBACK},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": _read_id("/etc/machine-id"),
            "systemUUID": _read_id("/etc/machine-id"),
            "bootID": _read_id("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": platform.release(),
            "osImage": _os_image(),
            "containerRuntimeVersion": "processnode://0",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()),
        },
    }


class ProcessNode:
    def __init__(self, api: Api, name: str, workdir: Path, path_prepend: Sequence[str]) -> None:
        self.api = api
        self.name = name
        self.workdir = workdir.resolve()
        self.path_prepend = list(path_prepend)
        self.labels = node_labels(name)
        self.processes = ProcessTable(self.workdir)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        # The API server as the node reaches it: what in-cluster clients are pointed at.
        self.server: str = api.server
        self._not_fitting: set[str] = set()
        self._node_uid = ""
        self._kubelet_version = "v0.0.0"
        # The conditions have held since this node process started.
        self._since = now_rfc3339()

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.workdir / namespace / name

    # -- the Node and its Lease --

    def register(self) -> None:
        version = self.api.get("/version") or {}
        self._kubelet_version = version.get("gitVersion", self._kubelet_version)
        meta = {
            "name": self.name,
            "labels": self.labels,
            "annotations": {WORKDIR_ANNOTATION: str(self.workdir)},
        }
        try:
            node = self.api.request(
                "POST",
                "/api/v1/nodes",
                body={"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": {}},
            )
            log.info("registered node %s", self.name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Adopt the Node an earlier run registered: refresh labels and annotations.
            node = self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                body={"metadata": {"labels": self.labels, "annotations": meta["annotations"]}},
                content_type="application/merge-patch+json",
            )
            log.info("adopted existing node %s", self.name)
        self._node_uid = node["metadata"]["uid"]
        self.post_node_status()
        self.renew_lease()

    def post_node_status(self) -> None:
        status = node_status(self.name, self._kubelet_version, now_rfc3339(), self._since)
        body = {"status": status}
        try:
            self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}/status",
                body=body,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.warning("node %s was deleted; registering it again", self.name)
            self.register()

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now_micro(),
        }
        try:
            self.api.request(
                "PATCH", path, body={"spec": spec}, content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self._node_uid}
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [owner],
                },
                "spec": spec,
            }
            self.api.request("POST", path.rsplit("/", 1)[0], body=lease)

    def heartbeat(self) -> None:
        beats = 0
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            beats += 1
            try:
                self.renew_lease()
                if beats % NODE_STATUS_EVERY == 0:
                    self.post_node_status()
            except Exception as exc:
                log.warning("heartbeat failed (will retry): %s", exc)

    # -- reading what Pods refer to --

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        obj = self.api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if obj is None:
            return None
        return {
            k: base64.b64decode(v).decode("utf-8", errors="replace")
            for k, v in (obj.get("data") or {}).items()
        }

    def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        obj = self.api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        return None if obj is None else dict(obj.get("data") or {})

    def request_token(self, pod: Json, source: Json) -> tuple[str, int]:
        """A token for the Pod's ServiceAccount from the TokenRequest API, bound to the
        Pod (it stops being valid when the Pod is deleted), as the kubelet asks for it."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        seconds = int(source.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        body: Json = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if source.get("audience"):
            body["spec"]["audiences"] = [source["audience"]]
        path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
        try:
            answer = self.api.request("POST", path, body=body)
        except ApiException as exc:
            if exc.status == 404:
                raise ContainerConfigError(f'serviceaccount "{account}" not found') from exc
            raise
        return answer["status"]["token"], seconds

    def sandbox_tools(self) -> tuple[str, str, str] | None:
        """(unshare, mount, readlink) when this node can make private mount namespaces."""
        tools = tuple(shutil.which(t, path=BASE_PATH) for t in ("unshare", "mount", "readlink"))
        if os.geteuid() != 0 or None in tools:
            return None
        return tools  # type: ignore[return-value]

    # -- writing Pods --

    def update_pod_status(
        self, namespace: str, name: str, uid: str, mutate: Callable[[Json], Json]
    ) -> None:
        """Read-modify-write of pods/status. A conflict (409) means someone else wrote in
        between: read again and reapply. An unreachable or failing API server is retried
        for a while, never taken out on the Pod's processes."""
        deadline = time.monotonic() + STATUS_RETRY_SECONDS
        delay = 0.5
        while True:
            if self.stopping.is_set():
                raise NodeStoppingError
            try:
                pod = self.api.get(_pod_path(namespace, name))
                if pod is None or pod["metadata"]["uid"] != uid:
                    raise PodGoneError
                old = pod.get("status") or {}
                new = mutate(old)
                if new == old:
                    return
                pod["status"] = new
                self.api.request("PUT", _pod_path(namespace, name, "status"), body=pod)
                return
            except ApiException as exc:
                if exc.status == 404:
                    raise PodGoneError from exc
                if exc.status == 409:
                    continue
                if exc.status not in (429, 0, None) and exc.status < 500:
                    raise
                problem = f"HTTP {exc.status}"
            except TRANSPORT_ERRORS as exc:
                problem = str(exc)
            if time.monotonic() > deadline:
                log.error("%s/%s: gave up writing the status: %s", namespace, name, problem)
                return
            log.warning("%s/%s: status write failed (%s); retrying", namespace, name, problem)
            self.stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            self.api.request("DELETE", _pod_path(namespace, name), body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def bind(self, pod: Json) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        try:
            self.api.request(
                "POST", _pod_path(meta["namespace"], meta["name"], "binding"), body=body
            )
            log.info("bound %s/%s to %s", meta["namespace"], meta["name"], self.name)
        except ApiException as exc:
            # Already bound (a stale event) or gone: nothing to do.
            if exc.status not in (404, 409):
                raise

    # -- the Pod watch --

    def handle(self, pod: Json) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        node_name = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node_name:
            if (
                spec.get("schedulerName", "") in DEFAULT_SCHEDULERS
                and not meta.get("deletionTimestamp")
                and phase in (None, "Pending")
            ):
                if node_selector_fits(pod, self.labels):
                    self.bind(pod)
                elif uid not in self._not_fitting:
                    self._not_fitting.add(uid)
                    log.info(
                        "%s/%s: its nodeSelector does not fit this node; left pending",
                        meta["namespace"],
                        meta["name"],
                    )
            return
        if node_name != self.name:
            return
        worker = self.workers.get(uid)
        if worker is not None:
            if worker.is_alive():
                worker.update(pod)
            elif meta.get("deletionTimestamp") and not worker.final_delete_sent:
                # A finished Pod deleted later: nothing runs any more, just remove it.
                worker.final_delete_sent = True
                self.delete_pod(meta["namespace"], meta["name"], uid)
            return
        if phase in TERMINAL_PHASES:
            if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds") != 0:
                self.delete_pod(meta["namespace"], meta["name"], uid)
            return
        worker = PodWorker(self, pod, restarted=looks_started(pod))
        self.workers[uid] = worker
        worker.start()

    def _handle_one(self, pod: Json) -> None:
        try:
            self.handle(pod)
        except (ApiException, *TRANSPORT_ERRORS):
            raise  # the API is in trouble: the caller lists again, which retries this Pod
        except Exception:
            # A bug with one odd Pod must not stop the node from serving the others.
            meta = pod.get("metadata") or {}
            log.exception("failed to handle pod %s/%s", meta.get("namespace"), meta.get("name"))

    def forget(self, uid: str) -> None:
        worker = self.workers.pop(uid, None)
        if worker is not None and worker.is_alive():
            worker.abort()

    def watch_pods(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.api.request("GET", "/api/v1/pods", timeout=60)
                version = listing["metadata"]["resourceVersion"]
                present = set()
                for pod in listing.get("items") or []:
                    present.add(pod["metadata"]["uid"])
                    self._handle_one(pod)
                # Pods deleted while no watch was open never send DELETED.
                for uid in set(self.workers) - present:
                    self.forget(uid)
                while not self.stopping.is_set():
                    version = self._watch_from(version)
            except WatchExpiredError:
                log.info("pod watch expired (410 Gone); listing again")
            except Exception as exc:
                if self.stopping.is_set():
                    return
                log.warning("pod watch failed (%s); listing again shortly", exc)
                self.stopping.wait(2.0)

    def _watch_from(self, version: str) -> str:
        for event in self.api.watch("/api/v1/pods", version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise WatchExpiredError
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                self.forget(obj["metadata"]["uid"])
            elif kind in ("ADDED", "MODIFIED"):
                self._handle_one(obj)
        return version

    # -- the whole --

    def run(self) -> None:
        self.processes.kill_leftovers()
        self.register()
        threads = [
            threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True),
            threading.Thread(target=self.watch_pods, name="pod-watch", daemon=True),
        ]
        for thread in threads:
            thread.start()
        log.info("node %s ready; work dir %s", self.name, self.workdir)
        while not self.stopping.wait(1.0):
            pass

    def shutdown(self) -> None:
        """Leave no process behind: every process group this node started is killed."""
        self.stopping.set()
        log.info("stopping: killing every process this node started")
        self.processes.shutdown(SHUTDOWN_GRACE_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.processnode",
        description="Stand in for the kubelet: run the dev cluster's Pods as local processes.",
    )
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), help="admin kubeconfig"
    )
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    parser.add_argument("--workdir", required=True, type=Path, help="Pod directories and logs")
    parser.add_argument(
        "--path-prepend",
        action="append",
        default=[],
        help="a directory put first on the containers' PATH (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.kubeconfig:
        parser.error("--kubeconfig (or KUBECONFIG) is required")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # urllib3 warns once per connection retry; the node's own warnings say what failed.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    args.workdir.mkdir(parents=True, exist_ok=True)
    prepend = [
        str(Path(p).resolve()) for entry in args.path_prepend for p in entry.split(os.pathsep) if p
    ]
    node = ProcessNode(Api(args.kubeconfig), args.node_name, args.workdir, prepend)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        node.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node.run()
    finally:
        node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
